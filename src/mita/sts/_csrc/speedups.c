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

/* ------------------------------------------------------------------ HMAC-SHA-256 of short messages (DKGA04) */

/* FIPS 180-4's constants: SHA-256 itself, not a table of the token engine (hashlib is the reference). */
static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t SHA_IV[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define ROTR(x, n) ((x) >> (n) | (x) << (32 - (n)))

static void sha256_generic(uint32_t state[8], const uint8_t block[64]) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 | (uint32_t)block[4 * i + 2] << 8 |
               block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + SHA_K[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI_CODE 1

/* The same compression with the SHA extensions (Intel's sha256rnds2 / sha256msg1 / sha256msg2), compiled for
 * them alone and called only when the CPU has them. */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_ni(uint32_t state[8], const uint8_t block[64]) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i st1 = _mm_loadu_si128((const __m128i *)&state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);       /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);       /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8); /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);      /* CDGH */
    const __m128i abef = st0, cdgh = st1;
    __m128i m[4];
    for (int i = 0; i < 16; i++) {
        if (i < 4) {
            m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * i)), swap);
        } else { /* W[t..t+3] from the four groups before it */
            __m128i w = _mm_sha256msg1_epu32(m[i % 4], m[(i + 1) % 4]);
            w = _mm_add_epi32(w, _mm_alignr_epi8(m[(i + 3) % 4], m[(i + 2) % 4], 4));
            m[i % 4] = _mm_sha256msg2_epu32(w, m[(i + 3) % 4]);
        }
        __m128i x = _mm_add_epi32(m[i % 4], _mm_loadu_si128((const __m128i *)&SHA_K[4 * i]));
        st1 = _mm_sha256rnds2_epu32(st1, st0, x);
        x = _mm_shuffle_epi32(x, 0x0E);
        st0 = _mm_sha256rnds2_epu32(st0, st1, x);
    }
    st0 = _mm_add_epi32(st0, abef);
    st1 = _mm_add_epi32(st1, cdgh);
    tmp = _mm_shuffle_epi32(st0, 0x1B);       /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);       /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);    /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);       /* HGFE */
    _mm_storeu_si128((__m128i *)&state[0], st0);
    _mm_storeu_si128((__m128i *)&state[4], st1);
}

static int cpu_has_sha_ni(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(b & (1u << 29))) return 0; /* SHA */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & (1u << 19)) && (c & (1u << 9)); /* SSE4.1, SSSE3 */
}
#else
#define HAVE_SHA_NI_CODE 0
static int cpu_has_sha_ni(void) { return 0; }
#endif

static int use_sha_ni = 0; /* set at import from the CPU; sha_ni() switches it (tests compare both) */

static void sha256_block(uint32_t state[8], const uint8_t block[64]) {
#if HAVE_SHA_NI_CODE
    if (use_sha_ni) {
        sha256_ni(state, block);
        return;
    }
#endif
    sha256_generic(state, block);
}

static PyObject *sha_ni(PyObject *self, PyObject *args) {
    int on = -1;
    if (!PyArg_ParseTuple(args, "|p", &on)) return NULL;
    if (on >= 0) use_sha_ni = on && cpu_has_sha_ni();
    return PyBool_FromLong(use_sha_ni);
}

/* hmac_states(key): the SHA-256 states after HMAC's inner and outer key blocks (RFC 2104), 16 words as 64 bytes.
 * For keys up to one block (DKGA04's are 20 bytes); a longer key is a ValueError (the caller then uses hashlib). */
static PyObject *hmac_states(PyObject *self, PyObject *args) {
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "y*", &key)) return NULL;
    if (key.len > 64) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "key longer than a SHA-256 block");
        return NULL;
    }
    uint8_t pad[2][64];
    memset(pad, 0, sizeof pad);
    memcpy(pad[0], key.buf, (size_t)key.len);
    memcpy(pad[1], key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    uint32_t states[16];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 64; i++) pad[k][i] ^= k == 0 ? 0x36 : 0x5C;
        memcpy(&states[8 * k], SHA_IV, sizeof SHA_IV);
        sha256_block(&states[8 * k], pad[k]);
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)states, sizeof states);
    memset(pad, 0, sizeof pad);
    memset(states, 0, sizeof states);
    return out;
}

static void put_length_and_be(uint8_t block[64], uint64_t bits) {
    for (int i = 0; i < 8; i++) block[63 - i] = (uint8_t)(bits >> (8 * i));
}

/* The full 32-byte HMAC of a message of at most 55 bytes, from hmac_states' 16 words. */
static void hmac_one(const uint32_t key_states[16], const uint8_t *message, size_t n, uint8_t mac[32]) {
    uint32_t states[16];
    memcpy(states, key_states, sizeof states);
    uint8_t block[64];
    memset(block, 0, sizeof block);
    memcpy(block, message, n);
    block[n] = 0x80;
    put_length_and_be(block, (uint64_t)(64 + n) * 8);
    sha256_block(&states[0], block);
    memset(block, 0, sizeof block);
    for (int i = 0; i < 8; i++) {
        block[4 * i] = (uint8_t)(states[i] >> 24);
        block[4 * i + 1] = (uint8_t)(states[i] >> 16);
        block[4 * i + 2] = (uint8_t)(states[i] >> 8);
        block[4 * i + 3] = (uint8_t)states[i];
    }
    block[32] = 0x80;
    put_length_and_be(block, (64 + 32) * 8);
    sha256_block(&states[8], block);
    for (int i = 0; i < 8; i++) {
        mac[4 * i] = (uint8_t)(states[8 + i] >> 24);
        mac[4 * i + 1] = (uint8_t)(states[8 + i] >> 16);
        mac[4 * i + 2] = (uint8_t)(states[8 + i] >> 8);
        mac[4 * i + 3] = (uint8_t)states[8 + i];
    }
    memset(states, 0, sizeof states);
    memset(block, 0, sizeof block);
}

static int hmac_args(PyObject *states, PyObject *size_obj, long *size) {
    if (!PyBytes_Check(states) || PyBytes_GET_SIZE(states) != 64) {
        PyErr_SetString(PyExc_TypeError, "states must be the 64 bytes of hmac_states");
        return -1;
    }
    *size = PyLong_AsLong(size_obj);
    if (*size == -1 && PyErr_Occurred()) return -1;
    if (*size < 1 || *size > 32) {
        PyErr_SetString(PyExc_ValueError, "size outside 1..32");
        return -1;
    }
    return 0;
}

/* hmac_short(states, size, message): the first ``size`` bytes (1..32) of HMAC-SHA-256 as a big-endian int, for
 * a message of at most 55 bytes (one block once padded; DKGA04's are 49). */
static PyObject *hmac_short(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long size;
    if (check_args(nargs, 3, "hmac_short") || hmac_args(args[0], args[1], &size)) return NULL;
    if (!PyBytes_Check(args[2]) || PyBytes_GET_SIZE(args[2]) > 55) {
        PyErr_SetString(PyExc_ValueError, "the message must be bytes, at most 55 of them");
        return NULL;
    }
    uint32_t states[16];
    memcpy(states, PyBytes_AS_STRING(args[0]), sizeof states);
    uint8_t mac[32];
    hmac_one(states, (const uint8_t *)PyBytes_AS_STRING(args[2]), (size_t)PyBytes_GET_SIZE(args[2]), mac);
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *out =
        PyLong_FromUnsignedNativeBytes(mac, (size_t)size, Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
#else
    PyObject *out = _PyLong_FromByteArray(mac, (size_t)size, 0, 0);
#endif
    memset(states, 0, sizeof states);
    memset(mac, 0, sizeof mac);
    return out;
}

/* hmac_batch(states, size, rows, width): for each ``width``-byte message of ``rows`` (width 1..55), the
 * first ``size`` bytes of its HMAC, all in one bytes object: the bulk path's DKGA04 without a loop in Python. */
static PyObject *hmac_batch(PyObject *self, PyObject *args) {
    PyObject *states_obj, *size_obj;
    Py_buffer rows;
    Py_ssize_t width;
    long size;
    if (!PyArg_ParseTuple(args, "OOy*n", &states_obj, &size_obj, &rows, &width)) return NULL;
    if (hmac_args(states_obj, size_obj, &size)) {
        PyBuffer_Release(&rows);
        return NULL;
    }
    if (width < 1 || width > 55 || rows.len % width != 0) {
        PyBuffer_Release(&rows);
        PyErr_SetString(PyExc_ValueError, "rows must be whole messages of at most 55 bytes");
        return NULL;
    }
    Py_ssize_t n = rows.len / width;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * size);
    if (out == NULL) {
        PyBuffer_Release(&rows);
        return NULL;
    }
    uint32_t states[16];
    memcpy(states, PyBytes_AS_STRING(states_obj), sizeof states);
    uint8_t mac[32];
    uint8_t *dest = (uint8_t *)PyBytes_AS_STRING(out);
    const uint8_t *src = (const uint8_t *)rows.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        hmac_one(states, src + i * width, (size_t)width, mac);
        memcpy(dest + i * size, mac, (size_t)size);
    }
    Py_END_ALLOW_THREADS
    memset(states, 0, sizeof states);
    memset(mac, 0, sizeof mac);
    PyBuffer_Release(&rows);
    return out;
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
    {"hmac_states", hmac_states, METH_VARARGS, "HMAC-SHA-256's inner and outer states for a key (64 bytes)."},
    {"hmac_short", (PyCFunction)(void (*)(void))hmac_short, METH_FASTCALL, "HMAC-SHA-256 of a short message."},
    {"hmac_batch", hmac_batch, METH_VARARGS, "HMAC-SHA-256 of many short messages of one width."},
    {"sha_ni", sha_ni, METH_VARARGS, "Whether the SHA extensions run; sha_ni(False) turns them off (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "The token engine's hot loops in C; mita.sts.accel selects them.", -1,
    methods,
};

/* What mita.sts.accel expects: a library built from an older speedups.c (a stale build in src/) is not used. */
#define SPEEDUPS_ABI 3

PyMODINIT_FUNC PyInit__speedups(void) {
    use_sha_ni = cpu_has_sha_ni();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", SPEEDUPS_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
