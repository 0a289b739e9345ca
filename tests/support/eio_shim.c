/* The fallback EIO injector for tests/adapters/test_storage_faults.py, where FUSE is not available:
 * an LD_PRELOAD shim around libc's fsync/fdatasync, write/pwrite/pwrite64 and read/pread/pread64.
 *
 *   gcc -shared -fPIC -O2 -o eio_shim.so eio_shim.c -ldl
 *   LD_PRELOAD=.../eio_shim.so SYNCREF_EIO_CONTROL=DIR syncref serve ...
 *
 * The rules are those of tests/support/faultfs.py: a file DIR/<op> (fsync, write or read) holding
 * "GLOB [COUNT]" makes that call fail with EIO on files whose base name matches GLOB, for the next
 * COUNT calls (default: until the file is removed); a rewritten file restarts its count, and a
 * spent one is removed (the count is per process; removing it makes it hold across restarts).  Each fault
 * is appended to DIR/log as "EIO <op> <absolute path>".  The fault is injected where SQLite (whose
 * unix VFS calls pwrite64/fdatasync/pread64 through the PLT) and Python's os.fsync meet libc, so
 * it is one step further from the device than the FUSE filesystem, which the tests prefer.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

enum { OP_FSYNC, OP_WRITE, OP_READ, N_OPS };
static const char *const NAMES[N_OPS] = {"fsync", "write", "read"};

struct rule {
    struct timespec mtime;
    ino_t ino;
    char glob[256];
    long count; /* -1: unlimited */
    long hits;
    int loaded;
};

static struct rule rules[N_OPS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int busy; /* the shim's own I/O passes through */

static ssize_t raw_write(int fd, const void *buf, size_t n) { return syscall(SYS_write, fd, buf, n); }

/* 1 when the call on fd must fail (and it is logged), else 0. */
static int should_fail(int op, int fd) {
    const char *dir = getenv("SYNCREF_EIO_CONTROL");
    if (dir == NULL || busy) return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, NAMES[op]);
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    busy = 1;
    int fail = 0;
    pthread_mutex_lock(&lock);
    struct rule *r = &rules[op];
    if (!r->loaded || r->ino != st.st_ino || r->mtime.tv_sec != st.st_mtim.tv_sec ||
        r->mtime.tv_nsec != st.st_mtim.tv_nsec) {
        char text[300] = {0};
        int cfd = open(path, O_RDONLY);
        if (cfd >= 0) {
            ssize_t got = syscall(SYS_read, cfd, text, sizeof text - 1);
            if (got < 0) got = 0;
            text[got] = 0;
            close(cfd);
        }
        r->count = -1;
        strcpy(r->glob, "*");
        char glob[256];
        long count;
        int parsed = sscanf(text, "%255s %ld", glob, &count);
        if (parsed >= 1) strcpy(r->glob, glob);
        if (parsed == 2) r->count = count;
        r->ino = st.st_ino;
        r->mtime = st.st_mtim;
        r->hits = 0;
        r->loaded = 1;
    }
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len > 0) {
        target[len] = 0;
        const char *base = strrchr(target, '/');
        base = base ? base + 1 : target;
        if (fnmatch(r->glob, base, 0) == 0 && (r->count < 0 || r->hits < r->count)) {
            r->hits++;
            fail = 1;
            /* a counted rule is spent for every process, as the FUSE daemon's is: remove it */
            if (r->count >= 0 && r->hits >= r->count) unlink(path);
            char logpath[4096], line[4200];
            snprintf(logpath, sizeof logpath, "%s/log", dir);
            int lfd = open(logpath, O_WRONLY | O_APPEND | O_CREAT, 0644);
            if (lfd >= 0) {
                int n = snprintf(line, sizeof line, "EIO %s %s\n", NAMES[op], target);
                raw_write(lfd, line, (size_t)n);
                close(lfd);
            }
        }
    }
    pthread_mutex_unlock(&lock);
    busy = 0;
    return fail;
}

typedef int (*sync_fn)(int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);

#define NEXT(name, type) \
    static type next_##name; \
    if (next_##name == NULL) next_##name = (type)dlsym(RTLD_NEXT, #name)

int fsync(int fd) {
    NEXT(fsync, sync_fn);
    if (should_fail(OP_FSYNC, fd)) { errno = EIO; return -1; }
    return next_fsync(fd);
}

int fdatasync(int fd) {
    NEXT(fdatasync, sync_fn);
    if (should_fail(OP_FSYNC, fd)) { errno = EIO; return -1; }
    return next_fdatasync(fd);
}

ssize_t write(int fd, const void *buf, size_t n) {
    NEXT(write, write_fn);
    if (fd > 2 && should_fail(OP_WRITE, fd)) { errno = EIO; return -1; }
    return next_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    NEXT(pwrite, pwrite_fn);
    if (should_fail(OP_WRITE, fd)) { errno = EIO; return -1; }
    return next_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    NEXT(pwrite64, pwrite_fn);
    if (should_fail(OP_WRITE, fd)) { errno = EIO; return -1; }
    return next_pwrite64(fd, buf, n, off);
}

ssize_t read(int fd, void *buf, size_t n) {
    NEXT(read, read_fn);
    if (fd > 2 && should_fail(OP_READ, fd)) { errno = EIO; return -1; }
    return next_read(fd, buf, n);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off) {
    NEXT(pread, pread_fn);
    if (should_fail(OP_READ, fd)) { errno = EIO; return -1; }
    return next_pread(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off) {
    NEXT(pread64, pread_fn);
    if (should_fail(OP_READ, fd)) { errno = EIO; return -1; }
    return next_pread64(fd, buf, n, off);
}
