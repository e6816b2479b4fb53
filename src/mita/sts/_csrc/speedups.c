/* mita.sts._speedups: the single-token hot loops of the token engine in C (optional).
 *
 * Why: a vend derives a key and encrypts one block per token; in pure Python MISTY1 (EA11) and STA (EA07) cost
 * several microseconds of interpreter time each, here well under one. The pure-Python modules stay the reference
 * (mita.sts.sta, mita.sts.misty1, mita.sts.crc): this file holds NO table of its own. mita.sts.accel copies in
 * the tables those modules build (the STA round tables, MISTY1's FI halves and subkey order, the CRC table)
 * before the first call, so the two paths cannot disagree on a table, and a differential property test
 * (tests/sts/test_accel.py) compares them on random inputs as well as on every vector.
 *
 * Every function takes and returns Python ints, exactly as its pure counterpart; a value that does not fit
 * raises OverflowError, as int.to_bytes does there. Tables are written once, under the GIL, before use.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ STA (EA07) */

/* [byte position][selector: key bit 3 | key bit 7 << 1][data byte] */
static uint64_t sta_enc[8][4][256];
static uint64_t sta_dec[8][4][256];
static uint64_t sta_dec_last[8][4][256];
static uint64_t sta_dec_first[8][256];
static int sta_ready = 0; /* bit 0: encryption tables set, bit 1: decryption tables */

static inline unsigned sel(uint64_t k, int j) {
    unsigned b = (unsigned)(k >> (8 * j)) & 0xFF;
    return ((b >> 3) & 1) | ((b >> 6) & 2);
}

static int copy_table(Py_buffer *view, void *dest, size_t size, const char *name) {
    if ((size_t)view->len != size) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zu bytes, got %zd", name, size, view->len);
        return -1;
    }
    memcpy(dest, view->buf, size);
    return 0;
}

static PyObject *sta_setup(PyObject *self, PyObject *args) {
    Py_buffer enc;
    if (!PyArg_ParseTuple(args, "y*", &enc)) return NULL;
    int bad = copy_table(&enc, sta_enc, sizeof sta_enc, "enc");
    PyBuffer_Release(&enc);
    if (bad) return NULL;
    sta_ready |= 1;
    Py_RETURN_NONE;
}

static PyObject *sta_setup_decrypt(PyObject *self, PyObject *args) {
    Py_buffer dec, last, first;
    if (!PyArg_ParseTuple(args, "y*y*y*", &dec, &last, &first)) return NULL;
    int bad = copy_table(&dec, sta_dec, sizeof sta_dec, "dec") ||
              copy_table(&last, sta_dec_last, sizeof sta_dec_last, "dec_last") ||
              copy_table(&first, sta_dec_first, sizeof sta_dec_first, "dec_first");
    PyBuffer_Release(&dec);
    PyBuffer_Release(&last);
    PyBuffer_Release(&first);
    if (bad) return NULL;
    sta_ready |= 2;
    Py_RETURN_NONE;
}

static int get_u64(PyObject *o, uint64_t *out) {
    if (!PyLong_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "an int is required");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* The key's low 64 bits, two's complement for negatives: what ``~key & (2**64 - 1)`` reads in sta.py. */
static int get_u64_mask(PyObject *o, uint64_t *out) {
    if (!PyLong_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "an int is required");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int check_args(Py_ssize_t nargs, Py_ssize_t want, const char *name) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    return 0;
}

static PyObject *sta_encrypt(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t x, key;
    if (check_args(nargs, 2, "sta_encrypt") || get_u64(args[0], &x) || get_u64_mask(args[1], &key)) return NULL;
    if (!(sta_ready & 1)) {
        PyErr_SetString(PyExc_RuntimeError, "STA tables not set");
        return NULL;
    }
    uint64_t k = ~key;
    k = k >> 12 | k << 52;
    for (int r = 0; r < 16; r++) {
        uint64_t y = 0;
        for (int j = 0; j < 8; j++) y |= sta_enc[j][sel(k, j)][(x >> (8 * j)) & 0xFF];
        x = y;
        k = k << 1 | k >> 63;
    }
    return PyLong_FromUnsignedLongLong(x);
}

static PyObject *sta_decrypt(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t block, key;
    if (check_args(nargs, 2, "sta_decrypt") || get_u64(args[0], &block) || get_u64_mask(args[1], &key)) return NULL;
    if (!(sta_ready & 2)) {
        PyErr_SetString(PyExc_RuntimeError, "STA decryption tables not set");
        return NULL;
    }
    uint64_t k = ~key;
    k = k >> 12 | k << 52;
    k = k << 15 | k >> 49; /* the 16th round key */
    uint64_t x = 0;
    for (int j = 0; j < 8; j++) x |= sta_dec_first[j][(block >> (8 * j)) & 0xFF];
    for (int r = 0; r < 16; r++) {
        uint64_t(*t)[4][256] = r < 15 ? sta_dec : sta_dec_last;
        uint64_t y = 0;
        for (int j = 0; j < 8; j++) y |= t[j][sel(k, j)][(x >> (8 * j)) & 0xFF];
        x = y;
        k = k >> 1 | k << 63;
    }
    return PyLong_FromUnsignedLongLong(x);
}

/* ------------------------------------------------------------------ MISTY1 (EA11) */

static uint16_t fi_in[65536];
static uint16_t fi_out[65536];
static uint8_t subkey_order[76];
static int misty1_ready = 0;

static PyObject *misty1_setup(PyObject *self, PyObject *args) {
    Py_buffer in, out, order;
    if (!PyArg_ParseTuple(args, "y*y*y*", &in, &out, &order)) return NULL;
    int bad = copy_table(&in, fi_in, sizeof fi_in, "fi_in") || copy_table(&out, fi_out, sizeof fi_out, "fi_out") ||
              copy_table(&order, subkey_order, sizeof subkey_order, "order");
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    PyBuffer_Release(&order);
    if (bad) return NULL;
    for (int i = 0; i < 76; i++) {
        if (subkey_order[i] >= 16) {
            PyErr_SetString(PyExc_ValueError, "order: subkey index beyond 15");
            return NULL;
        }
    }
    misty1_ready = 1;
    Py_RETURN_NONE;
}

#define FI(x, k1, k2) (fi_out[fi_in[(x) ^ (k1)] ^ (k2)])

/* A 128-bit key as two 64-bit halves; OverflowError when it is negative or needs more than 128 bits. */
static int get_u128(PyObject *o, uint64_t *hi, uint64_t *lo) {
    static PyObject *sixty_four = NULL;
    if (!PyLong_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "an int is required");
        return -1;
    }
    if (sixty_four == NULL && (sixty_four = PyLong_FromLong(64)) == NULL) return -1;
    PyObject *high = PyNumber_Rshift(o, sixty_four);
    if (high == NULL) return -1;
    int bad = get_u64(high, hi);
    Py_DECREF(high);
    if (bad) return -1;
    *lo = (uint64_t)PyLong_AsUnsignedLongLongMask(o);
    return PyErr_Occurred() ? -1 : 0;
}

static void misty1_schedule(uint64_t hi, uint64_t lo, uint16_t sched[76]) {
    uint16_t ek[16];
    for (int i = 0; i < 4; i++) {
        ek[i] = (uint16_t)(hi >> (48 - 16 * i));
        ek[4 + i] = (uint16_t)(lo >> (48 - 16 * i));
    }
    for (int i = 0; i < 8; i++) ek[8 + i] = fi_out[fi_in[ek[i]] ^ ek[(i + 1) % 8]];
    for (int i = 0; i < 76; i++) sched[i] = ek[subkey_order[i]];
}

static int misty1_args(PyObject *const *args, Py_ssize_t nargs, const char *name, uint64_t *block, uint16_t s[76]) {
    uint64_t hi, lo;
    if (check_args(nargs, 2, name) || get_u64(args[0], block) || get_u128(args[1], &hi, &lo)) return -1;
    if (!misty1_ready) {
        PyErr_SetString(PyExc_RuntimeError, "MISTY1 tables not set");
        return -1;
    }
    misty1_schedule(hi, lo, s);
    return 0;
}

static PyObject *misty1_encrypt(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t block;
    uint16_t s[76];
    if (misty1_args(args, nargs, "misty1_encrypt", &block, s)) return NULL;
    unsigned a = (unsigned)(block >> 48) & 0xFFFF, b = (unsigned)(block >> 32) & 0xFFFF;
    unsigned c = (unsigned)(block >> 16) & 0xFFFF, d = (unsigned)block & 0xFFFF;
    for (int i = 0; i < 72; i += 18) {
        const uint16_t *q = s + i;
        b ^= a & q[0]; /* FL on the left half */
        a ^= b | q[1];
        d ^= c & q[2]; /* FL on the right half */
        c ^= d | q[3];
        unsigned t0 = FI(a, q[4], q[5]) ^ b; /* right ^= FO(left) */
        unsigned t1 = FI(b, q[6], q[7]) ^ t0;
        t0 = FI(t0, q[8], q[9]) ^ t1;
        c ^= t1 ^ q[10];
        d ^= t0;
        t0 = FI(c, q[11], q[12]) ^ d; /* left ^= FO(right) */
        t1 = FI(d, q[13], q[14]) ^ t0;
        t0 = FI(t0, q[15], q[16]) ^ t1;
        a ^= t1 ^ q[17];
        b ^= t0;
    }
    b ^= a & s[72];
    a ^= b | s[73];
    d ^= c & s[74];
    c ^= d | s[75];
    return PyLong_FromUnsignedLongLong((uint64_t)c << 48 | (uint64_t)d << 32 | (uint64_t)a << 16 | b);
}

static PyObject *misty1_decrypt(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t block;
    uint16_t s[76];
    if (misty1_args(args, nargs, "misty1_decrypt", &block, s)) return NULL;
    unsigned c = (unsigned)(block >> 48) & 0xFFFF, d = (unsigned)(block >> 32) & 0xFFFF;
    unsigned a = (unsigned)(block >> 16) & 0xFFFF, b = (unsigned)block & 0xFFFF;
    a ^= b | s[73]; /* FL^-1 on the left half */
    b ^= a & s[72];
    c ^= d | s[75]; /* FL^-1 on the right half */
    d ^= c & s[74];
    for (int i = 54; i >= 0; i -= 18) {
        const uint16_t *q = s + i;
        unsigned t0 = FI(c, q[11], q[12]) ^ d; /* left ^= FO(right) */
        unsigned t1 = FI(d, q[13], q[14]) ^ t0;
        t0 = FI(t0, q[15], q[16]) ^ t1;
        a ^= t1 ^ q[17];
        b ^= t0;
        t0 = FI(a, q[4], q[5]) ^ b; /* right ^= FO(left) */
        t1 = FI(b, q[6], q[7]) ^ t0;
        t0 = FI(t0, q[8], q[9]) ^ t1;
        c ^= t1 ^ q[10];
        d ^= t0;
        a ^= b | q[1];
        b ^= a & q[0];
        c ^= d | q[3];
        d ^= c & q[2];
    }
    return PyLong_FromUnsignedLongLong((uint64_t)a << 48 | (uint64_t)b << 32 | (uint64_t)c << 16 | d);
}

/* ------------------------------------------------------------------ CRC-16 of the 50 information bits */

static uint16_t crc_table[256];
static int crc_ready = 0;

static PyObject *crc_setup(PyObject *self, PyObject *args) {
    Py_buffer table;
    if (!PyArg_ParseTuple(args, "y*", &table)) return NULL;
    int bad = copy_table(&table, crc_table, sizeof crc_table, "table");
    PyBuffer_Release(&table);
    if (bad) return NULL;
    crc_ready = 1;
    Py_RETURN_NONE;
}

static PyObject *crc_field(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t info;
    if (check_args(nargs, 2, "crc_field") || get_u64(args[0], &info)) return NULL;
    int currency = PyObject_IsTrue(args[1]);
    if (currency < 0) return NULL;
    if (!crc_ready) {
        PyErr_SetString(PyExc_RuntimeError, "CRC table not set");
        return NULL;
    }
    if (info >> 56) {
        PyErr_SetString(PyExc_OverflowError, "int too big to convert");
        return NULL;
    }
    unsigned crc = 0xFFFF;
    for (int i = 6; i >= 0; i--) crc = (crc >> 8) ^ crc_table[(crc ^ (unsigned)(info >> (8 * i))) & 0xFF];
    if (currency) crc = (crc >> 8) ^ crc_table[(crc ^ 1) & 0xFF];
    return PyLong_FromLong((long)((crc & 0xFF) << 8 | crc >> 8));
}

/* ------------------------------------------------------------------ Luhn digits of a meter number */

/* pan_digit(drn, iin_weight): the MeterPAN's Luhn digit for a DRN of ASCII digits whose IIN adds iin_weight to
 * Luhn's sum (mita.sts.identity._IIN_WEIGHT), or -1 when the DRN's own check digit is wrong, -2 when it is not
 * all ASCII digits. One pass: the digits in even places from the right (the check digit's) are summed as they
 * are for the DRN's check and doubled for the PAN's; the others the other way round. */
static PyObject *pan_digit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_args(nargs, 2, "pan_digit")) return NULL;
    if (!PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "a str is required");
        return NULL;
    }
    long weight = PyLong_AsLong(args[1]);
    if (weight == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n;
    const char *text = PyUnicode_AsUTF8AndSize(args[0], &n);
    if (text == NULL) return NULL;
    long check = 0, pan = weight;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)text[n - 1 - i] - (unsigned)'0';
        if (d > 9) return PyLong_FromLong(-2);
        unsigned doubled = d < 5 ? 2 * d : 2 * d - 9;
        if (i % 2 == 0) {
            check += d;
            pan += doubled;
        } else {
            check += doubled;
            pan += d;
        }
    }
    if (check % 10) return PyLong_FromLong(-1);
    return PyLong_FromLong((10 - pan % 10) % 10);
}

/* ------------------------------------------------------------------ the module */

static PyMethodDef methods[] = {
    {"sta_setup", sta_setup, METH_VARARGS, "Copy in STA's encryption round tables."},
    {"sta_setup_decrypt", sta_setup_decrypt, METH_VARARGS, "Copy in STA's decryption tables (dec, last, first)."},
    {"sta_encrypt", (PyCFunction)(void (*)(void))sta_encrypt, METH_FASTCALL, "STA.encrypt(block, key)."},
    {"sta_decrypt", (PyCFunction)(void (*)(void))sta_decrypt, METH_FASTCALL, "STA.decrypt(block, key)."},
    {"misty1_setup", misty1_setup, METH_VARARGS, "Copy in MISTY1's FI halves and subkey order."},
    {"misty1_encrypt", (PyCFunction)(void (*)(void))misty1_encrypt, METH_FASTCALL, "misty1.encrypt(block, key)."},
    {"misty1_decrypt", (PyCFunction)(void (*)(void))misty1_decrypt, METH_FASTCALL, "misty1.decrypt(block, key)."},
    {"crc_setup", crc_setup, METH_VARARGS, "Copy in the CRC-16/MODBUS table."},
    {"crc_field", (PyCFunction)(void (*)(void))crc_field, METH_FASTCALL, "crc.crc_field(info50, currency)."},
    {"pan_digit", (PyCFunction)(void (*)(void))pan_digit, METH_FASTCALL, "identity._pan_digit(drn, iin_weight)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "The token engine's hot loops in C; mita.sts.accel selects them.", -1,
    methods,
};

/* What mita.sts.accel expects: a library built from an older speedups.c (a stale build in src/) is not used. */
#define SPEEDUPS_ABI 2

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", SPEEDUPS_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
