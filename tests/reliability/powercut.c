/* The power-cut recorder: an LD_PRELOAD shim for the process under test (tests/reliability/test_power_loss.py).
 *
 * It records, in order, every write, truncation and unlink of one SQLite database and its -wal file, and every
 * fdatasync/fsync of them, to an append-only log (POWERCUT_LOG): one record per system call, written with one
 * writev on an O_APPEND descriptor, so records of several processes and threads interleave whole, in the order
 * the kernel took the calls. Writes are logged after they return, syncs after they succeed: a sync record means
 * "everything written to this file before it is on the disk". The test replays the log to build the files a
 * power cut at any record would leave. Only POWERCUT_DB and POWERCUT_DB-wal are followed (the -shm is rebuilt
 * from the WAL when the database opens, so it is not state a power cut can keep).
 *
 * Record: u8 op ('W' write, 'S' sync, 'T' truncate, 'U' unlink), u8 file (0 database, 1 wal), u16 0, u32 pid,
 * u64 offset (or the new size), u64 length, then `length` bytes of data for 'W'. Little-endian, as the host.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536

struct record {
    uint8_t op;
    uint8_t file;
    uint16_t zero;
    uint32_t pid;
    uint64_t offset;
    uint64_t length;
} __attribute__((packed));

static signed char tracked[MAX_FD];
static int log_fd = -1;
static char db_path[4096];
static char wal_path[4100];

static int (*real_open64)(const char *, int, ...);
static int (*real_open)(const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);
static int (*real_ftruncate64)(int, off_t);
static int (*real_unlink)(const char *);

static void resolve(void) {
    if (real_open64) return;
    real_open = dlsym(RTLD_NEXT, "open");
    real_close = dlsym(RTLD_NEXT, "close");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_write = dlsym(RTLD_NEXT, "write");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_unlink = dlsym(RTLD_NEXT, "unlink");
    real_open64 = dlsym(RTLD_NEXT, "open64");
}

__attribute__((constructor)) static void start(void) {
    resolve();
    memset(tracked, -1, sizeof tracked);
    const char *db = getenv("POWERCUT_DB");
    const char *log = getenv("POWERCUT_LOG");
    if (!db || !log || strlen(db) >= sizeof db_path) return;
    strcpy(db_path, db);
    strcpy(wal_path, db);
    strcat(wal_path, "-wal");
    log_fd = real_open64(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

static int which(const char *path) {
    if (log_fd < 0 || !path) return -1;
    if (strcmp(path, db_path) == 0) return 0;
    if (strcmp(path, wal_path) == 0) return 1;
    return -1;
}

static void emit(uint8_t op, int file, uint64_t offset, uint64_t length, const void *data) {
    int saved = errno;
    struct record r = {op, (uint8_t)file, 0, (uint32_t)getpid(), offset, length};
    struct iovec v[2] = {{&r, sizeof r}, {(void *)data, data ? length : 0}};
    ssize_t want = (ssize_t)(sizeof r + (data ? length : 0));
    if (writev(log_fd, v, data ? 2 : 1) != want) abort(); /* a record lost would make the replay lie */
    errno = saved;
}

static void follow(int fd, const char *path, int flags) {
    int file = which(path);
    if (fd < 0 || fd >= MAX_FD) return;
    tracked[fd] = (signed char)file;
    if (file >= 0 && (flags & O_TRUNC)) emit('T', file, 0, 0, NULL);
}

/* open and open64 both: libc's callers use either, and only a mode given with O_CREAT or O_TMPFILE is read. */
static int traced_open(int (**real)(const char *, int, ...), const char *path, int flags, va_list ap) {
    resolve();
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    int fd = (*real)(path, flags, mode);
    follow(fd, path, flags);
    return fd;
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int fd = traced_open(&real_open64, path, flags, ap);
    va_end(ap);
    return fd;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int fd = traced_open(&real_open, path, flags, ap);
    va_end(ap);
    return fd;
}

int close(int fd) {
    resolve();
    if (fd >= 0 && fd < MAX_FD) tracked[fd] = -1;
    return real_close(fd);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t offset) {
    resolve();
    ssize_t done = real_pwrite64(fd, buf, n, offset);
    if (done > 0 && fd >= 0 && fd < MAX_FD && tracked[fd] >= 0) emit('W', tracked[fd], (uint64_t)offset, (uint64_t)done, buf);
    return done;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset) { return pwrite64(fd, buf, n, offset); }

ssize_t write(int fd, const void *buf, size_t n) {
    resolve();
    if (fd < 0 || fd >= MAX_FD || tracked[fd] < 0) return real_write(fd, buf, n);
    off_t at = lseek(fd, 0, SEEK_CUR);
    ssize_t done = real_write(fd, buf, n);
    if (done > 0) emit('W', tracked[fd], (uint64_t)at, (uint64_t)done, buf);
    return done;
}

static int synced(int fd, int rc) {
    if (rc == 0 && fd >= 0 && fd < MAX_FD && tracked[fd] >= 0) emit('S', tracked[fd], 0, 0, NULL);
    return rc;
}

int fdatasync(int fd) { resolve(); return synced(fd, real_fdatasync(fd)); }
int fsync(int fd) { resolve(); return synced(fd, real_fsync(fd)); }

int ftruncate64(int fd, off_t size) {
    resolve();
    int rc = real_ftruncate64(fd, size);
    if (rc == 0 && fd >= 0 && fd < MAX_FD && tracked[fd] >= 0) emit('T', tracked[fd], (uint64_t)size, 0, NULL);
    return rc;
}

int ftruncate(int fd, off_t size) { return ftruncate64(fd, size); }

int unlink(const char *path) {
    resolve();
    int rc = real_unlink(path);
    int file = which(path);
    if (rc == 0 && file >= 0) emit('U', file, 0, 0, NULL);
    return rc;
}
