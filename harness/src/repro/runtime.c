/* ---- runtime: processes, pipes, observations and their judgement ----
 *
 * The coordinator (main) never maps anything: it makes the case's files,
 * forks the fresh processes before any step, then sends each step to the
 * process that performs it as a command on that process's pipe and waits
 * for the observation on its reply pipe. That reply is what orders the
 * processes: nothing here sleeps. Every process keeps only the pipe ends
 * of itself, of its threads and of the children it will fork, so a reply
 * pipe reads EOF exactly when its process is gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The runtime serves every case; a case uses only some of it. */
#define RUNTIME static __attribute__((unused))

static long long PS;   /* the page size, from sysconf(_SC_PAGESIZE) */
static long long HPS;  /* the default huge page size, from /proc/meminfo */

/* ---------- what a step observed ---------- */

enum { OUT_OK, OUT_ERRNO, OUT_SIGNAL, OUT_ERROR };

struct obs {
    int kind;
    int err;                  /* OUT_ERRNO */
    int signo, code;          /* OUT_SIGNAL, with the fault's si_code */
    long long offset, done;   /* faulting address - start of the access; bytes done */
    int has_value;
    long long value;
    int has_stat;
    long long st_size, st_blocks, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec;
    int has_exit, exited, status; /* wait: exited with status, else killed by signal status */
    int pid;                  /* fork: the child */
    int has_bytes;
    long long nbytes;         /* bytes that follow on the wire */
    char msg[200];            /* OUT_ERROR: what went wrong */
    unsigned char *bytes;     /* the receiver's copy of them */
};

/* ---------- what a step must observe ---------- */

enum { SINCE_NONE, SINCE_CHANGED, SINCE_UNCHANGED };

struct expect {
    int observe;              /* record, never judge */
    int err;                  /* the call fails with this errno */
    int signo, si_code;       /* the access raises this signal (si_code 0: any) */
    const char *bytes;        /* bytes read equal these nbytes ... */
    long long nbytes;
    int has_fill, fill;       /* ... or all equal this value */
    int has_pattern;          /* ... or the splitmix64 pattern of this seed */
    unsigned long long seed;
    long long from;           /* ... from this offset in the pattern on */
    int has_value;
    long long value;
    int has_range;
    long long lo, hi;
    int same_as, differs_from; /* 1 + index of a recorded value */
    int record;               /* 1 + index under which to record the value */
    int snapshot;             /* fstat: 1 + index under which to record the result */
    int has_size;
    long long st_size;
    int has_blocks;
    long long blocks_lo, blocks_hi;
    int mtime, mtime_snap, ctime, ctime_snap; /* SINCE_*, 1 + snapshot index */
    int has_exit, exit_code;
    int killed_by;
};

/* Bytes a step writes: a literal, a fill or a seeded pattern. */
enum { D_LITERAL, D_FILL, D_PATTERN };

struct data {
    int kind;
    const char *lit;
    int fill;
    unsigned long long seed;
    long long len;
};

/* A named mapping: where mmap put it and the length it was given. */
struct map {
    char *addr;
    long long len;
    int valid;
};

/* ---------- small helpers ---------- */

RUNTIME void die(const char *what)
{
    fprintf(stderr, "repro: %s: %s\n", what, strerror(errno));
    exit(2);
}

RUNTIME long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

RUNTIME void huge_page_size(void)
{
    char line[256];
    FILE *f = fopen("/proc/meminfo", "r");
    HPS = 2 << 20; /* the size the harness assumes where the kernel has none */
    if (!f)
        return;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Hugepagesize: %lld kB", &HPS) == 1) {
            HPS *= 1024;
            break;
        }
    fclose(f);
}

/* The same bytes as the harness's `pattern`: byte i is byte i % 8 of
 * splitmix64's output number i / 8, little-endian. */
RUNTIME void pattern_into(unsigned long long seed, long long from, unsigned char *buf, long long n)
{
    for (long long j = 0; j < n; j++) {
        long long i = from + j;
        uint64_t z = seed + (uint64_t)(i / 8 + 1) * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        buf[j] = (unsigned char)(z >> (8 * (i % 8)));
    }
}

/* The bytes of `d` in a page-aligned buffer (O_DIRECT needs one), or NULL. */
static unsigned char *data_bytes(const struct data *d)
{
    void *p;
    if (posix_memalign(&p, (size_t)PS, d->len > 0 ? (size_t)d->len : 1) != 0)
        return NULL;
    if (d->kind == D_LITERAL)
        memcpy(p, d->lit, (size_t)d->len);
    else if (d->kind == D_FILL)
        memset(p, d->fill, (size_t)d->len);
    else
        pattern_into(d->seed, 0, p, d->len);
    return p;
}

/* The name of a value in a table, or `what` and the number. */
static const char *name_in(const struct name *table, size_t n, int value, const char *what)
{
    static char other[32];
    for (size_t i = 0; i < n; i++)
        if (table[i].value == value)
            return table[i].name;
    snprintf(other, sizeof other, "%s %d", what, value);
    return other;
}

#define errno_name(e) name_in(ERRNO_NAMES, sizeof ERRNO_NAMES / sizeof ERRNO_NAMES[0], (e), "errno")
#define signal_name(s) name_in(SIGNAL_NAMES, sizeof SIGNAL_NAMES / sizeof SIGNAL_NAMES[0], (s), "signal")

static const char *si_code_name(int s, int code)
{
    static char other[32];
    for (size_t i = 0; i < sizeof SI_CODE_NAMES / sizeof SI_CODE_NAMES[0]; i++)
        if (SI_CODE_NAMES[i].signo == s && SI_CODE_NAMES[i].code == code)
            return SI_CODE_NAMES[i].name;
    snprintf(other, sizeof other, "%d", code);
    return other;
}

/* ---------- in a worker: the calls, their outcome ---------- */

RUNTIME void failed(struct obs *o)
{
    o->kind = OUT_ERRNO;
    o->err = errno;
}

/* rc -1 is a failed call with errno; anything else succeeded. */
RUNTIME int check(struct obs *o, long rc)
{
    if (rc == -1) {
        failed(o);
        return 0;
    }
    return 1;
}

RUNTIME void error(struct obs *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    o->kind = OUT_ERROR;
    vsnprintf(o->msg, sizeof o->msg, fmt, ap);
    va_end(ap);
}

/* A name whose creating call failed does not exist (as in the harness). */
RUNTIME int need_fd(struct obs *o, int fd, const char *name)
{
    if (fd < 0)
        error(o, "no fd named `%s` in this process (did its open fail?)", name);
    return fd >= 0;
}

RUNTIME int need_map(struct obs *o, const struct map *m, const char *name)
{
    if (!m->valid)
        error(o, "no mapping named `%s` in this process (did its mmap fail?)", name);
    return m->valid;
}

/* The default length of a range: the rest of the mapping from `at`. */
RUNTIME size_t rest(const struct map *m, long long at)
{
    long long from = at > 0 ? at : 0;
    return (size_t)(m->len > from ? m->len - from : 0);
}

RUNTIME void set_bytes(struct obs *o, unsigned char *buf, long long n)
{
    o->has_bytes = 1;
    o->bytes = buf;
    o->nbytes = n;
    o->has_value = n == 1 || n == 2 || n == 4 || n == 8;
    if (n == 1)
        o->value = buf[0];
    else if (n == 2) {
        uint16_t v;
        memcpy(&v, buf, 2);
        o->value = v;
    } else if (n == 4) {
        uint32_t v;
        memcpy(&v, buf, 4);
        o->value = v;
    } else if (n == 8) {
        uint64_t v;
        memcpy(&v, buf, 8);
        o->value = (long long)v;
    }
}

RUNTIME void fault_seen(struct obs *o, const struct mc_fault *f, const char *start)
{
    o->kind = OUT_SIGNAL;
    o->signo = f->signo;
    o->code = f->code;
    o->offset = (long long)(f->addr - (uintptr_t)start);
    o->done = (long long)f->done;
}

/* Volatile byte stores, a fault caught and observed as its signal. */
RUNTIME void store(struct obs *o, char *at, const struct data *d)
{
    struct mc_fault f;
    unsigned char *src = data_bytes(d);
    if (!src) {
        error(o, "out of memory");
        return;
    }
    if (mc_store((volatile uint8_t *)at, src, (size_t)d->len, &f) != 0)
        fault_seen(o, &f, at);
    free(src);
}

/* Volatile byte loads. */
RUNTIME void load(struct obs *o, char *at, long long len)
{
    struct mc_fault f;
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf) {
        error(o, "out of memory");
        return;
    }
    if (mc_load(buf, (volatile uint8_t *)at, (size_t)len, &f) != 0) {
        fault_seen(o, &f, at);
        free(buf);
        return;
    }
    set_bytes(o, buf, len);
}

RUNTIME void increment(struct obs *o, char *at, unsigned long long count, int atomic, int width)
{
    struct mc_fault f;
    if (mc_increment(at, count, atomic, width, &f) != 0)
        fault_seen(o, &f, at);
}

/* pread until len bytes or end of file. */
RUNTIME void read_at(struct obs *o, int fd, long long at, long long len)
{
    void *p;
    long long got = 0;
    if (posix_memalign(&p, (size_t)PS, len > 0 ? (size_t)len : 1) != 0) {
        error(o, "out of memory");
        return;
    }
    while (got < len) {
        ssize_t n = pread(fd, (char *)p + got, (size_t)(len - got), at + got);
        if (n < 0) {
            failed(o);
            free(p);
            return;
        }
        if (n == 0)
            break;
        got += n;
    }
    set_bytes(o, p, got);
}

RUNTIME void write_data(struct obs *o, int fd, long long at, const struct data *d, int positioned)
{
    unsigned char *buf = data_bytes(d);
    ssize_t n;
    if (!buf) {
        error(o, "out of memory");
        return;
    }
    n = positioned ? pwrite(fd, buf, (size_t)d->len, at) : write(fd, buf, (size_t)d->len);
    if (check(o, n)) {
        o->has_value = 1;
        o->value = n;
    }
    free(buf);
}

RUNTIME void fstat_of(struct obs *o, int fd)
{
    struct stat st;
    if (!check(o, fstat(fd, &st)))
        return;
    o->has_stat = 1;
    o->st_size = st.st_size;
    o->st_blocks = st.st_blocks;
    o->mtime_sec = st.st_mtim.tv_sec;
    o->mtime_nsec = st.st_mtim.tv_nsec;
    o->ctime_sec = st.st_ctim.tv_sec;
    o->ctime_nsec = st.st_ctim.tv_nsec;
}

/* mincore: one byte per page, the low bit of the kernel's entry. */
RUNTIME void residency(struct obs *o, char *addr, size_t len)
{
    size_t pages = (len + (size_t)PS - 1) / (size_t)PS;
    unsigned char *vec = calloc(pages ? pages : 1, 1);
    if (!vec) {
        error(o, "out of memory");
        return;
    }
    if (!check(o, mincore(addr, len, vec))) {
        free(vec);
        return;
    }
    for (size_t i = 0; i < pages; i++)
        vec[i] &= 1;
    set_bytes(o, vec, (long long)pages);
    o->has_value = 1;
    o->value = 0;
    for (size_t i = 0; i < pages; i++)
        o->value += vec[i];
}

/* The page frame number behind addr (0 when absent or hidden), or with
   swapped the swap bit (62: the entry is a swap entry) as 1 or 0. */
RUNTIME void frame_of(struct obs *o, char *addr, int swapped)
{
    uint64_t e;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (!check(o, fd))
        return;
    if (pread(fd, &e, 8, (off_t)((uintptr_t)addr / (uintptr_t)PS * 8)) != 8) {
        failed(o);
        close(fd);
        return;
    }
    close(fd);
    o->has_value = 1;
    if (swapped)
        o->value = (long long)((e >> 62) & 1);
    else
        o->value = (e >> 63) ? (long long)(e & ((1ULL << 55) - 1)) : 0;
}

/* One field of the /proc/self/smaps entry whose range holds addr, in bytes
 * (the harness's `smaps`): header lines are "start-end perms ...", field
 * lines "Label:   N kB" up to the next header. */
RUNTIME void smaps_field(struct obs *o, char *addr, const char *label)
{
    char line[512], name[64];
    unsigned long long start, end, at = (uintptr_t)addr;
    long long kb;
    int inside = 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) {
        failed(o);
        return;
    }
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%llx-%llx ", &start, &end) == 2) {
            if (inside)
                break;
            inside = start <= at && at < end;
            continue;
        }
        if (inside && sscanf(line, "%63[^:]: %lld kB", name, &kb) == 2 && !strcmp(name, label)) {
            fclose(f);
            o->has_value = 1;
            o->value = kb * 1024;
            return;
        }
    }
    fclose(f);
    error(o, inside ? "this kernel's smaps has no `%s` field" : "no mapping holds the address (%s)", label);
}

/* ---------- processes and pipes ---------- */

static void run_step(int id, struct obs *o); /* the case's steps, generated below */

enum { C_STEP, C_FORK, C_EXIT, C_WAIT, C_THREAD, C_REMOTE };

struct command {
    int op, arg;
    long long pid;
    unsigned long long addr;      /* C_REMOTE: the address in process pid */
};

/* The process or thread this is (-1: the coordinator), per thread: each
 * thread of a process serves its own pipes. */
static __thread int self = -1;
static int cmd_fd[NPROC][2];      /* coordinator -> process */
static int reply_fd[NPROC][2];    /* process -> coordinator */
static pid_t pid_of[NPROC];
static int gone[NPROC];           /* exited, or waited for */
static int reaped[NPROC];         /* its pid may be another process's now */
static int coordinator_pid;
static long long deadline;
static long long recorded[NVALUES + 1];
static int recorded_set[NVALUES + 1];
static struct obs snapshots[NSNAPSHOTS + 1];

RUNTIME int in_subtree(int q, int p)
{
    for (; q >= 0; q = PARENT[q])
        if (q == p)
            return 1;
    return 0;
}

RUNTIME void close_end(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Become process p: keep the pipes of p and of the children it will fork. */
RUNTIME void become(int p)
{
    self = p;
    for (int q = 0; q < NPROC; q++) {
        close_end(&cmd_fd[q][1]);
        close_end(&reply_fd[q][0]);
        if (!in_subtree(q, p)) {
            close_end(&cmd_fd[q][0]);
            close_end(&reply_fd[q][1]);
        }
    }
}

RUNTIME int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads n bytes; 0 on success, -1 on end of file or error, -2 past the deadline. */
RUNTIME int read_all(int fd, void *buf, size_t n, int timed)
{
    char *p = buf;
    while (n > 0) {
        if (timed) {
            struct pollfd pf = { .fd = fd, .events = POLLIN };
            long long left = deadline - now_ms();
            int r = left > 0 ? poll(&pf, 1, (int)(left > 1000000 ? 1000000 : left)) : 0;
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0)
                return -2;
        }
        ssize_t got = read(fd, p, n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

RUNTIME void reply(struct obs *o)
{
    long long n = o->has_bytes ? o->nbytes : 0;
    if (write_all(reply_fd[self][1], o, sizeof *o) != 0 ||
        (n > 0 && write_all(reply_fd[self][1], o->bytes, (size_t)n) != 0))
        _exit(1);
    if (o->has_bytes)
        free(o->bytes);
}

RUNTIME void worker_fork(int child, struct obs *o);
RUNTIME void thread_or_remote(const struct command *c, struct obs *o);

/* A process's life: one command at a time, one reply each. */
RUNTIME void worker(void)
{
    for (;;) {
        struct command c;
        struct obs o;
        if (read_all(cmd_fd[self][0], &c, sizeof c, 0) != 0)
            _exit(0); /* the coordinator is gone */
        memset(&o, 0, sizeof o);
        if (c.op == C_STEP)
            run_step(c.arg, &o);
        else if (c.op == C_EXIT)
            _exit(c.arg);
        else if (c.op == C_FORK) {
            worker_fork(c.arg, &o);
            if (self == c.arg)
                continue; /* the child: its parent replies */
        } else if (c.op == C_THREAD || c.op == C_REMOTE) {
            thread_or_remote(&c, &o);
        } else if (c.op == C_WAIT) {
            int st;
            pid_t r;
            while ((r = waitpid((pid_t)c.pid, &st, 0)) < 0 && errno == EINTR)
                ;
            if (check(&o, r)) {
                o.has_exit = 1;
                o.exited = WIFEXITED(st);
                o.status = WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st);
            }
        }
        reply(&o);
    }
}

/* fork(2) in a worker: the child inherits every mapping and fd, and takes
 * over its own pipes; the parent lets go of them. */
RUNTIME void worker_fork(int child, struct obs *o)
{
    pid_t pid = fork();
    if (!check(o, pid))
        return;
    if (pid == 0) {
        become(child);
        return;
    }
    o->pid = pid;
    for (int q = 0; q < NPROC; q++)
        if (in_subtree(q, child)) {
            close_end(&cmd_fd[q][0]);
            close_end(&reply_fd[q][1]);
        }
}

/* ==== threads and another process's memory, in a worker (issue 18) ====
 *
 * A thread of a case's process is a pthread serving its own pair of pipes
 * with the same loop as the process's first thread (worker), so steps
 * reach it in the case's order like any process's, and a `together` of
 * two threads of one process runs them at once. The case's names (fds,
 * mappings) are the program's globals, which threads share as they share
 * the process's fd table and address space; the fault state of the
 * guarded accesses is per thread (fault.c). A fork in a thread leaves the
 * child only that thread, which goes on serving the child's pipes
 * (worker_fork); `exit` in any thread is _exit(2), which ends the process.
 */
#include <pthread.h>
#include <sys/ptrace.h>

/* "process `p`" or "thread `t1` of process `p`", for messages. */
static const char *who(int p)
{
    static char s[200];
    if (OWNER[p] < 0)
        snprintf(s, sizeof s, "process `%s`", PROC_NAME[p]);
    else
        snprintf(s, sizeof s, "thread `%s` of process `%s`", PROC_NAME[p], PROC_NAME[OWNER[p]]);
    return s;
}

/* The coordinator's: which threads a spawn_thread started. A step sent to
 * one that did not start (pthread_create failed) is an error at once, as
 * in the harness, rather than a wait for the time limit. */
static int spawned[NPROC];

RUNTIME int thread_missing(struct obs *o, int p)
{
    if (OWNER[p] < 0 || spawned[p])
        return 0;
    error(o, "no %s (was its spawn_thread performed?)", who(p));
    return 1;
}

static void *thread_main(void *slot)
{
    self = (int)(intptr_t)slot;
    worker();
    return NULL;
}

/* remote_read / remote_write: the target's pid and the address of its
 * mapping, which come with the command (the coordinator asked the target
 * for the address just before). */
static __thread long long remote_pid;
static __thread unsigned long long remote_addr;

RUNTIME void thread_or_remote(const struct command *c, struct obs *o)
{
    if (c->op == C_THREAD) {
        pthread_t t;
        int err = pthread_create(&t, NULL, thread_main, (void *)(intptr_t)c->arg);
        if (err != 0) {
            o->kind = OUT_ERRNO;
            o->err = err;
        } else
            pthread_detach(t);
        return;
    }
    remote_pid = c->pid;
    remote_addr = c->addr;
    run_step(c->arg, o);
}

enum { VIA_PROCESS_VM, VIA_PROC_MEM, VIA_PTRACE };

/* process_vm_readv or process_vm_writev (one signature) of len bytes at
 * the target's address: the count, or -1 with the errno observed. */
typedef ssize_t (*vm_call)(pid_t, const struct iovec *, unsigned long, const struct iovec *,
                           unsigned long, unsigned long);

RUNTIME long long via_process_vm(struct obs *o, vm_call call, void *buf, long long len)
{
    struct iovec local = { buf, (size_t)len };
    struct iovec there = { (void *)(uintptr_t)remote_addr, (size_t)len };
    long long n = call((pid_t)remote_pid, &local, 1, &there, 1, 0);
    if (n < 0)
        failed(o);
    return n;
}

/* pread or pwrite of the target's /proc/PID/mem at its address: the
 * count, or -1 with the errno of open or of the call observed. */
RUNTIME long long via_proc_mem(struct obs *o, void *buf, long long len, int writing)
{
    char path[64];
    long long n;
    int fd;
    snprintf(path, sizeof path, "/proc/%lld/mem", remote_pid);
    fd = open(path, (writing ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (!check(o, fd))
        return -1;
    n = writing ? pwrite(fd, buf, (size_t)len, (off_t)remote_addr)
              : pread(fd, buf, (size_t)len, (off_t)remote_addr);
    if (n < 0)
        failed(o);
    close(fd);
    return n;
}

/* The target seized and stopped (PTRACE_SEIZE then PTRACE_INTERRUPT: no
 * SIGSTOP is queued to it, and after PTRACE_DETACH its blocking read of
 * its pipe goes on as if nothing was). 0, or -1 with the errno observed. */
RUNTIME int seize(struct obs *o)
{
    pid_t pid = (pid_t)remote_pid;
    int st;
    if (!check(o, ptrace(PTRACE_SEIZE, pid, NULL, NULL)))
        return -1;
    if (!check(o, ptrace(PTRACE_INTERRUPT, pid, NULL, NULL))) {
        ptrace(PTRACE_DETACH, pid, NULL, NULL);
        return -1;
    }
    while (waitpid(pid, &st, __WALL) < 0 && errno == EINTR)
        ;
    return 0;
}

/* PTRACE_PEEKDATA: errno tells a failure from a word of -1. */
RUNTIME int peek(struct obs *o, unsigned long long at, long *word)
{
    errno = 0;
    *word = ptrace(PTRACE_PEEKDATA, (pid_t)remote_pid, (void *)(uintptr_t)at, NULL);
    if (*word == -1 && errno != 0) {
        failed(o);
        return 0;
    }
    return 1;
}

RUNTIME void remote_read(struct obs *o, int via, long long len)
{
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    long long n = -1;
    if (!buf) {
        error(o, "out of memory");
        return;
    }
    if (via == VIA_PROCESS_VM)
        n = via_process_vm(o, process_vm_readv, buf, len);
    else if (via == VIA_PROC_MEM)
        n = via_proc_mem(o, buf, len, 0);
    else if (seize(o) == 0) {
        n = len;
        for (long long i = 0; i < len; i += 8) {
            long word;
            if (!peek(o, remote_addr + (unsigned long long)i, &word)) {
                n = -1;
                break;
            }
            memcpy(buf + i, &word, (size_t)(len - i < 8 ? len - i : 8));
        }
        ptrace(PTRACE_DETACH, (pid_t)remote_pid, NULL, NULL);
    }
    if (n < 0)
        free(buf);
    else
        set_bytes(o, buf, n);
}

/* Observes the count written, as pwrite does. */
RUNTIME void remote_write(struct obs *o, int via, const struct data *d)
{
    unsigned char *src = data_bytes(d);
    long long n = -1;
    if (!src) {
        error(o, "out of memory");
        return;
    }
    if (via == VIA_PROCESS_VM)
        n = via_process_vm(o, process_vm_writev, src, d->len);
    else if (via == VIA_PROC_MEM)
        n = via_proc_mem(o, src, d->len, 1);
    else if (seize(o) == 0) {
        n = d->len;
        for (long long i = 0; i < d->len; i += 8) {
            unsigned long long at = remote_addr + (unsigned long long)i;
            long long k = d->len - i < 8 ? d->len - i : 8;
            long word = 0;
            /* A partial last word keeps the target's bytes past the data. */
            if (k < 8 && !peek(o, at, &word)) {
                n = -1;
                break;
            }
            memcpy(&word, src + i, (size_t)k);
            if (!check(o, ptrace(PTRACE_POKEDATA, (pid_t)remote_pid, (void *)(uintptr_t)at,
                                 (void *)word))) {
                n = -1;
                break;
            }
        }
        ptrace(PTRACE_DETACH, (pid_t)remote_pid, NULL, NULL);
    }
    if (n >= 0) {
        o->has_value = 1;
        o->value = n;
    }
    free(src);
}

/* ==== end of threads and another process's memory, in a worker ==== */

/* A fresh process: forked from the coordinator before anything is mapped,
 * dying with it (PR_SET_PDEATHSIG). Forked children get no such signal:
 * a case may end a parent and go on with its child, as Linux allows;
 * they end when their command pipe closes, or are killed at the end. */
RUNTIME void start_fresh(int p)
{
    pid_t pid;
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        die("fork");
    if (pid > 0) {
        pid_of[p] = pid;
        return;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != coordinator_pid)
        _exit(1);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    if (mc_install_fault_handlers() != 0)
        _exit(1);
    become(p);
    worker();
}

/* Interrupted: every process of the case goes with us, reaped (kill(2)
 * and waitpid(2) are async-signal-safe). */
RUNTIME void interrupted(int sig)
{
    for (int p = 0; p < NPROC; p++)
        if (pid_of[p] > 0 && !reaped[p])
            kill(pid_of[p], SIGKILL);
    while (waitpid(-1, NULL, __WALL) > 0 || errno == EINTR)
        ;
    _exit(128 + sig);
}

RUNTIME void start(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    PS = sysconf(_SC_PAGESIZE);
    huge_page_size();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (chdir(dir) != 0)
        die(dir);
    coordinator_pid = getpid();
    /* Children whose parent ended come to us, to be reaped at the end. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, interrupted);
    signal(SIGTERM, interrupted);
    signal(SIGHUP, interrupted);
    deadline = now_ms() + TIMEOUT_MS;
    for (int p = 0; p < NPROC; p++)
        if (pipe(cmd_fd[p]) != 0 || pipe(reply_fd[p]) != 0)
            die("pipe");
    printf("# %s\n# page size %lld, scratch directory %s\n", TITLE, PS, dir);
    if (PS != GENERATED_PAGE_SIZE)
        printf("# note: the expectations were chosen for page size %d\n", GENERATED_PAGE_SIZE);
}

/* After the files exist: every fresh process, then the coordinator keeps
 * only its own ends. */
RUNTIME void start_processes(void)
{
    for (int p = 0; p < NPROC; p++)
        if (PARENT[p] < 0)
            start_fresh(p);
    for (int q = 0; q < NPROC; q++) {
        close_end(&cmd_fd[q][0]);
        close_end(&reply_fd[q][1]);
    }
}

RUNTIME void send_command(int p, int op, int arg, long long pid)
{
    struct command c = { op, arg, pid };
    /* A dead process is seen as end of file on its reply pipe. */
    if (write_all(cmd_fd[p][1], &c, sizeof c) != 0 && errno != EPIPE)
        die("write to a process");
}

RUNTIME void receive(int p, struct obs *o)
{
    int r;
    memset(o, 0, sizeof *o);
    if (thread_missing(o, p))
        return;
    r = read_all(reply_fd[p][0], o, sizeof *o, 1);
    o->bytes = NULL;
    if (r == 0 && o->has_bytes) {
        o->bytes = malloc(o->nbytes > 0 ? (size_t)o->nbytes : 1);
        if (!o->bytes)
            die("malloc");
        r = read_all(reply_fd[p][0], o->bytes, (size_t)o->nbytes, 1);
    }
    if (r == -2) {
        memset(o, 0, sizeof *o);
        error(o, "timed out after %d ms waiting for %s", TIMEOUT_MS, who(p));
    } else if (r != 0) {
        memset(o, 0, sizeof *o);
        gone[p] = 1;
        if (OWNER[p] >= 0) {
            /* A thread's pipe closes only when its whole process ends. */
            gone[OWNER[p]] = 1;
            error(o, "process `%s` died during the step; the step was in its thread `%s`",
                  PROC_NAME[OWNER[p]], PROC_NAME[p]);
        } else
            error(o, "process `%s` died during the step", PROC_NAME[p]);
    }
}

/* A step in a worker: the command, then its observation. */
RUNTIME void in_process(struct obs *o, int p, int step)
{
    send_command(p, C_STEP, step, 0);
    receive(p, o);
}

/* ==== threads and another process's memory, in the coordinator (issue 18) ==== */

/* spawn_thread: process (or thread) `by` starts thread t, which serves
 * t's pipes; `by` answers once pthread_create returned. */
RUNTIME void spawn_thread(struct obs *o, int by, int t)
{
    send_command(by, C_THREAD, t, 0);
    receive(by, o);
    if (o->kind == OUT_OK)
        spawned[t] = 1;
}

/* remote_read / remote_write, in two commands as the harness does: the
 * target tells where its mapping is now (step `address`), then `by`
 * performs `step` on that address in the target's pid. */
RUNTIME void remote_step(struct obs *o, int by, int target, int address, int step)
{
    struct command c = { C_REMOTE, step, 0, 0 };
    in_process(o, target, address);
    if (o->kind != OUT_OK)
        return;
    c.pid = pid_of[target];
    c.addr = (unsigned long long)o->value;
    if (write_all(cmd_fd[by][1], &c, sizeof c) != 0 && errno != EPIPE)
        die("write to a process");
    receive(by, o);
}

/* ==== end of threads and another process's memory, in the coordinator ==== */

/* Waits until process p has ended: its reply pipe reads end of file. */
RUNTIME int wait_gone(struct obs *o, int p)
{
    char c;
    int r;
    if (thread_missing(o, p))
        return 0;
    r = read_all(reply_fd[p][0], &c, 1, 1);
    gone[p] = 1;
    if (r == -2)
        error(o, "timed out waiting for %s to end", who(p));
    else if (r == 0)
        error(o, "%s answered when it should have ended", who(p));
    return r == -1;
}

RUNTIME void fork_process(struct obs *o, int parent, int child)
{
    send_command(parent, C_FORK, child, 0);
    receive(parent, o);
    if (o->kind == OUT_OK)
        pid_of[child] = o->pid;
}

RUNTIME void exit_process(struct obs *o, int p, int code)
{
    memset(o, 0, sizeof *o);
    send_command(p, C_EXIT, code, 0);
    wait_gone(o, p);
}

/* waitpid(2) by the process's real parent: us for a fresh one, else the
 * worker that forked it. */
RUNTIME void wait_process(struct obs *o, int p)
{
    memset(o, 0, sizeof *o);
    if (PARENT[p] >= 0) {
        send_command(PARENT[p], C_WAIT, 0, pid_of[p]);
        receive(PARENT[p], o);
    } else if (wait_gone(o, p)) {
        int st;
        pid_t r;
        while ((r = waitpid(pid_of[p], &st, 0)) < 0 && errno == EINTR)
            ;
        if (check(o, r)) {
            o->has_exit = 1;
            o->exited = WIFEXITED(st);
            o->status = WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st);
        }
    }
    if (o->has_exit)
        gone[p] = reaped[p] = 1;
}

RUNTIME void kill_process(struct obs *o, int p, int sig)
{
    memset(o, 0, sizeof *o);
    if (reaped[p])
        error(o, "process `%s` was already reaped: it has no pid to signal", PROC_NAME[p]);
    else
        check(o, kill(pid_of[p], sig));
}

/* What a newcomer reads: a fresh open, then pread until len bytes (len < 0:
 * to the end); from the storage, with O_DIRECT, which writes back dirty
 * pages of the range first and then reads the device. */
RUNTIME void check_file(struct obs *o, const char *path, long long at, long long len, int storage)
{
    long long align = storage ? PS : 1, off = at - at % align, skip = at - off, got = 0;
    long long cap = len >= 0 ? len : 1 << 16;
    unsigned char *out = malloc((size_t)cap + 1);
    void *chunk;
    int fd;
    memset(o, 0, sizeof *o);
    if (!out || posix_memalign(&chunk, (size_t)PS, 1 << 16) != 0)
        die("malloc");
    fd = open(path, O_RDONLY | O_CLOEXEC | (storage ? O_DIRECT : 0));
    if (!check(o, fd)) {
        free(out);
        free(chunk);
        return;
    }
    while (len < 0 || got < len) {
        ssize_t n = pread(fd, chunk, 1 << 16, off);
        if (n < 0) {
            failed(o);
            free(out);
            out = NULL;
            break;
        }
        if (n <= skip)
            break;
        long long take = n - skip;
        if (len >= 0 && take > len - got)
            take = len - got;
        if (got + take > cap) {
            cap = (got + take) * 2;
            out = realloc(out, (size_t)cap);
            if (!out)
                die("realloc");
        }
        memcpy(out + got, (char *)chunk + skip, (size_t)take);
        got += take;
        off += n;
        skip = 0;
    }
    close(fd);
    free(chunk);
    if (out)
        set_bytes(o, out, got);
}

RUNTIME void drop_caches(struct obs *o)
{
    int fd;
    memset(o, 0, sizeof *o);
    sync();
    fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (check(o, fd)) {
        check(o, write(fd, "3", 1));
        close(fd);
    }
}

/* ---------- judging, as the harness does ---------- */

static int failures;
static char problems[8192];

RUNTIME void problem(const char *fmt, ...)
{
    size_t used = strlen(problems);
    va_list ap;
    if (used && used < sizeof problems - 1)
        problems[used++] = '\n', problems[used] = 0;
    va_start(ap, fmt);
    vsnprintf(problems + used, sizeof problems - used, fmt, ap);
    va_end(ap);
}

static const char *describe(const struct obs *o)
{
    static char s[300];
    if (o->kind == OUT_OK)
        snprintf(s, sizeof s, "success");
    else if (o->kind == OUT_ERRNO)
        snprintf(s, sizeof s, "failure with %s", errno_name(o->err));
    else if (o->kind == OUT_SIGNAL)
        snprintf(s, sizeof s, "%s (%s) at offset %lld", signal_name(o->signo),
                 si_code_name(o->signo, o->code), o->offset);
    else
        snprintf(s, sizeof s, "error: %s", o->msg);
    return s;
}

RUNTIME char printable(unsigned char b)
{
    return b >= 0x20 && b < 0x7f ? (char)b : '.';
}

RUNTIME void dump_row(const unsigned char *b, long long n, char *out, size_t size)
{
    size_t at = 0;
    for (long long i = 0; i < 16; i++) {
        if (i < n)
            at += (size_t)snprintf(out + at, size - at, "%02x ", b[i]);
        else
            at += (size_t)snprintf(out + at, size - at, "   ");
    }
    at += (size_t)snprintf(out + at, size - at, " |");
    for (long long i = 0; i < n; i++)
        out[at++] = printable(b[i]);
    snprintf(out + at, size - at, "|");
}

/* The first differing offset, then the 16-byte rows that differ. */
RUNTIME void byte_diff(const unsigned char *want, long long wn, const unsigned char *got, long long gn)
{
    long long first = 0, rows = ((wn > gn ? wn : gn) + 15) / 16;
    int shown = 0;
    char ws[24] = "nothing", gs[24] = "nothing";
    while (first < wn && first < gn && want[first] == got[first])
        first++;
    if (first < wn)
        snprintf(ws, sizeof ws, "0x%02x %c", want[first], printable(want[first]));
    if (first < gn)
        snprintf(gs, sizeof gs, "0x%02x %c", got[first], printable(got[first]));
    if (wn != gn)
        problem("expected %lld bytes, observed %lld; bytes differ at offset %lld: expected %s, observed %s",
                wn, gn, first, ws, gs);
    else
        problem("bytes differ at offset %lld: expected %s, observed %s", first, ws, gs);
    for (long long r = 0; r < rows; r++) {
        long long s = r * 16;
        long long w = wn > s ? (wn - s < 16 ? wn - s : 16) : 0;
        long long g = gn > s ? (gn - s < 16 ? gn - s : 16) : 0;
        char a[120], b[120], marks[60];
        if (w == g && memcmp(want + s, got + s, (size_t)w) == 0)
            continue;
        if (shown++ == 8) {
            problem("  ... (more rows differ)");
            break;
        }
        dump_row(want + s, w, a, sizeof a);
        dump_row(got + s, g, b, sizeof b);
        for (long long i = 0; i < 16; i++) {
            int differ = (i < w) != (i < g) || (i < w && want[s + i] != got[s + i]);
            memcpy(marks + 3 * i, differ ? "^^ " : "   ", 4);
        }
        for (size_t end = strlen(marks); end > 0 && marks[end - 1] == ' '; end--)
            marks[end - 1] = 0;
        problem("  %08llx  expected %s\n  %08llx  observed %s\n            marks    %s", s, a, s, b, marks);
    }
}

RUNTIME void judge_bytes(const struct expect *e, const struct obs *o)
{
    unsigned char *want;
    long long n = e->bytes ? e->nbytes : o->nbytes;
    if (!o->has_bytes) {
        problem("expected bytes, but the step returned none");
        return;
    }
    want = malloc(n > 0 ? (size_t)n : 1);
    if (!want)
        die("malloc");
    if (e->bytes)
        memcpy(want, e->bytes, (size_t)n);
    else if (e->has_fill)
        memset(want, e->fill, (size_t)n);
    else
        pattern_into(e->seed, e->from, want, n);
    if (n != o->nbytes || memcmp(want, o->bytes, (size_t)n) != 0)
        byte_diff(want, n, o->bytes, o->nbytes);
    free(want);
}

RUNTIME void judge_since(const char *field, int since, int snap, long long sec, long long nsec, int mtime)
{
    const struct obs *s = &snapshots[snap];
    long long then_sec = mtime ? s->mtime_sec : s->ctime_sec;
    long long then_nsec = mtime ? s->mtime_nsec : s->ctime_nsec;
    int changed = then_sec != sec || then_nsec != nsec;
    if (!s->has_stat)
        problem("no snapshot was taken for %s (did that fstat fail?)", field);
    else if (changed != (since == SINCE_CHANGED))
        problem("expected %s %s: was %lld.%09lld, now %lld.%09lld", field,
                since == SINCE_CHANGED ? "to change" : "to stay unchanged",
                then_sec, then_nsec, sec, nsec);
}

/* Everything but the outcome, every mismatch reported. */
RUNTIME void judge_fields(const struct expect *e, const struct obs *o)
{
    if (e->bytes || e->has_fill || e->has_pattern)
        judge_bytes(e, o);
    if (e->has_value && !o->has_value)
        problem("expected value %lld, but the step observed no number", e->value);
    else if (e->has_value && o->value != e->value)
        problem("expected value %lld, observed %lld", e->value, o->value);
    if (e->has_range && !o->has_value)
        problem("expected a value in [%lld, %lld], but the step observed no number", e->lo, e->hi);
    else if (e->has_range && (o->value < e->lo || o->value > e->hi))
        problem("expected a value in [%lld, %lld], observed %lld", e->lo, e->hi, o->value);
    /* (NVALUES > 0: a case without recorded values has no such comparisons) */
    if (NVALUES == 0 || (!e->same_as && !e->differs_from))
        ;
    else if ((e->same_as && !recorded_set[e->same_as]) || (e->differs_from && !recorded_set[e->differs_from]))
        problem("no value was recorded as `%s`", VALUE_NAME[e->same_as + e->differs_from]);
    else if (e->same_as && o->value != recorded[e->same_as])
        problem("expected %lld to equal `%s` (%lld)", o->value, VALUE_NAME[e->same_as], recorded[e->same_as]);
    else if (e->differs_from && o->value == recorded[e->differs_from])
        problem("expected %lld to differ from `%s` (%lld)", o->value, VALUE_NAME[e->differs_from],
                recorded[e->differs_from]);
    if (e->has_exit || e->killed_by) {
        int exited = e->has_exit, status = e->has_exit ? e->exit_code : e->killed_by;
        if (!o->has_exit)
            problem("expected an exit status, observed none");
        else if (o->exited != exited || o->status != status)
            problem("expected the process to end %s %d%s%s, it ended %s %d%s%s",
                    exited ? "with exit status" : "killed by signal", status,
                    exited ? "" : " ", exited ? "" : signal_name(status),
                    o->exited ? "with exit status" : "killed by signal", o->status,
                    o->exited ? "" : " ", o->exited ? "" : signal_name(o->status));
    }
    if (e->has_size || e->has_blocks || e->mtime || e->ctime) {
        if (!o->has_stat) {
            problem("expected stat fields, observed none");
            return;
        }
        if (e->has_size && o->st_size != e->st_size)
            problem("expected st_size %lld, observed %lld", e->st_size, o->st_size);
        if (e->has_blocks && (o->st_blocks < e->blocks_lo || o->st_blocks > e->blocks_hi))
            problem("expected st_blocks in [%lld, %lld], observed %lld", e->blocks_lo, e->blocks_hi,
                    o->st_blocks);
        if (NSNAPSHOTS > 0 && e->mtime)
            judge_since("st_mtime", e->mtime, e->mtime_snap, o->mtime_sec, o->mtime_nsec, 1);
        if (NSNAPSHOTS > 0 && e->ctime)
            judge_since("st_ctime", e->ctime, e->ctime_snap, o->ctime_sec, o->ctime_nsec, 0);
    }
}

/* What an `observe` step saw, on one line. */
RUNTIME void print_observed(const struct obs *o)
{
    printf(" # observed %s", describe(o));
    if (o->has_value)
        printf(", value %lld", o->value);
    if (o->has_bytes) {
        printf(", %lld bytes", o->nbytes);
        for (long long i = 0; i < o->nbytes && i < 32; i++)
            printf(" %02x", o->bytes[i]);
        if (o->nbytes > 32)
            printf(" ...");
    }
    if (o->has_stat)
        printf(", st_size %lld st_blocks %lld", o->st_size, o->st_blocks);
    if (o->has_exit)
        printf(", %s %d", o->exited ? "exit status" : "killed by signal", o->status);
}

/* Judges one step, prints its line, records what later steps compare
 * with. Returns 0 when the case must stop. */
RUNTIME int judge(const char *index, const char *op, const char *what, const struct expect *e,
                 struct obs *o)
{
    int ok = 1;
    problems[0] = 0;
    if (o->kind == OUT_ERROR)
        problem("the program could not perform the step: %s", o->msg);
    else if (e->observe)
        ;
    else if (e->err) {
        if (o->kind != OUT_ERRNO || o->err != e->err)
            problem("expected the call to fail with %s, observed %s", errno_name(e->err), describe(o));
    } else if (e->signo) {
        if (o->kind != OUT_SIGNAL || o->signo != e->signo)
            problem("expected the access to raise %s, observed %s", signal_name(e->signo), describe(o));
        else if (e->si_code && o->code != e->si_code)
            problem("expected %s with si_code %s, observed %s", signal_name(e->signo),
                    si_code_name(e->signo, e->si_code), describe(o));
    } else if (o->kind != OUT_OK)
        problem("expected success, observed %s", describe(o));
    if (!problems[0] && !e->observe)
        judge_fields(e, o);
    if (NVALUES > 0 && e->record && o->has_value) {
        recorded[e->record] = o->value;
        recorded_set[e->record] = 1;
    }
    if (NSNAPSHOTS > 0 && e->snapshot && o->has_stat)
        snapshots[e->snapshot] = *o;
    if (problems[0]) {
        ok = 0;
        failures++;
        printf("FAIL %s %s (%s): %s\n", index, op, what, problems);
    } else {
        printf("ok %s %s (%s)", index, op, what);
        if (e->observe)
            print_observed(o);
        printf("\n");
    }
    free(o->bytes);
    o->bytes = NULL;
    return ok;
}

/* A `together` step: every command sent at once, then the join (every
 * answer, in the listed order), then the judgements in that order. */
struct concurrent {
    int process, step;
    const char *op, *what;
    const struct expect *e;
};

RUNTIME int together(const struct concurrent *s, int n)
{
    struct obs o[NPROC];
    for (int i = 0; i < n; i++)
        send_command(s[i].process, C_STEP, s[i].step, 0);
    for (int i = 0; i < n; i++)
        receive(s[i].process, &o[i]);
    for (int i = 0; i < n; i++)
        if (!judge(STEP_NAMES[s[i].step], s[i].op, s[i].what, s[i].e, &o[i])) {
            for (int j = i + 1; j < n; j++)
                free(o[j].bytes);
            return 0;
        }
    return 1;
}

/* The end, whatever happened: every process killed, every child reaped
 * (ours, and those that came to us when their parent ended). */
RUNTIME int finish(void)
{
    for (int p = 0; p < NPROC; p++)
        if (pid_of[p] > 0 && !reaped[p])
            kill(pid_of[p], SIGKILL);
    while (waitpid(-1, NULL, __WALL) > 0 || errno == EINTR)
        ;
    printf("# %s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
}

/* A starting file, made as the harness makes it: the content, then the
 * size (zeros written when they must be allocated, else ftruncate), then
 * the mode. A file left by an earlier run is removed first. */
RUNTIME void make_file(const char *name, const struct data *content, long long size, int allocated,
                      int mode)
{
    long long written = 0;
    int fd;
    unlink(name);
    fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die(name);
    if (content && content->len > 0) {
        unsigned char *b = data_bytes(content);
        if (!b || write_all(fd, b, (size_t)content->len) != 0)
            die(name);
        free(b);
        written = content->len;
    }
    if (size >= 0 && allocated && size > written) {
        static const char zeros[1 << 16];
        for (long long left = size - written; left > 0; left -= (long long)sizeof zeros)
            if (write_all(fd, zeros, left < (long long)sizeof zeros ? (size_t)left : sizeof zeros) != 0)
                die(name);
    }
    if ((size >= 0 && ftruncate(fd, size) != 0) || fchmod(fd, (mode_t)mode) != 0)
        die(name);
    close(fd);
}

/* ==== pins and system state (issue 18): begin ====
 *
 * What exec/ops_pins.rs and exec/ops_objects.rs do, for the steps of
 * repro/system.rs: pinned pages (a read of a pipe; io_uring fixed buffers
 * over the raw syscalls and the rings mmap'd as io_uring_setup(2)
 * describes, so the program needs no liburing), shared memory, limits,
 * SIGXFSZ as an observation, credentials.
 *
 * Shared memory outlives processes, so a case's objects have names of
 * this run ("/repro-shm-<coordinator pid>-<name>"; segments are
 * IPC_PRIVATE) and a guardian process removes them: every process of the
 * case holds the write end of its "life" pipe and nothing else does, so
 * the guardian reads end of file once they are all gone, whether the
 * program finished, was interrupted, or was killed (its processes die
 * with it: PR_SET_PDEATHSIG, or end of file on their command pipes). It
 * then removes the segments the workers registered on its "registry" pipe
 * (each while its creator pid still matches, so a recycled id of someone
 * else's is left alone) and unlinks the case's shm_open names. Only a
 * SIGKILL of the whole process group leaves them behind. */
#include <grp.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <sys/ipc.h>
#include <sys/resource.h>
#include <sys/shm.h>

static int life_fd[2] = { -1, -1 };     /* case processes hold [1]; the guardian reads [0] */
static int registry_fd[2] = { -1, -1 }; /* case processes write segments to [1] */

struct segment_record {
    int shmid, cpid;
};

RUNTIME void shm_name(char *out, size_t n, const char *label)
{
    snprintf(out, n, "/repro-shm-%d-%s", coordinator_pid, label);
}

RUNTIME int need_seg(struct obs *o, int id, const char *name)
{
    if (id < 0)
        error(o, "no segment named `%s` in this process (did its shmget fail?)", name);
    return id >= 0;
}

/* Told to the guardian before anything else happens, so it is removed even
 * if this process is killed a moment later; one that cannot be told is
 * removed at once, as the harness does. */
RUNTIME int register_segment(struct obs *o, int id)
{
    struct segment_record r = { id, (int)getpid() };
    if (write(registry_fd[1], &r, sizeof r) != (ssize_t)sizeof r) {
        int e = errno;
        shmctl(id, IPC_RMID, NULL);
        error(o, "cannot register segment %d for removal: %s", id, strerror(e));
        return 0;
    }
    return 1;
}

RUNTIME void guardian(void)
{
    struct segment_record r;
    char c, path[256];
    /* A ^C or a kill of the group's other processes must not stop the cleanup. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    close_end(&life_fd[1]);
    close_end(&registry_fd[1]);
    for (int q = 0; q < NPROC; q++) {
        close_end(&cmd_fd[q][0]);
        close_end(&cmd_fd[q][1]);
        close_end(&reply_fd[q][0]);
        close_end(&reply_fd[q][1]);
    }
    while (read(life_fd[0], &c, 1) < 0 && errno == EINTR)
        ;
    /* The registry is non-blocking: what was written, then EAGAIN. */
    while (read(registry_fd[0], &r, sizeof r) == (ssize_t)sizeof r) {
        struct shmid_ds ds;
        if (shmctl(r.shmid, IPC_STAT, &ds) == 0 && ds.shm_cpid == r.cpid)
            shmctl(r.shmid, IPC_RMID, NULL);
    }
    for (int i = 0; SHM_LABELS[i]; i++) {
        shm_name(path, sizeof path, SHM_LABELS[i]);
        shm_unlink(path);
    }
    _exit(0);
}

/* Before the case's processes start, so they all inherit the pipes. */
RUNTIME void start_guardian(void)
{
    pid_t pid;
    if (pipe2(life_fd, O_CLOEXEC) != 0 || pipe2(registry_fd, O_CLOEXEC | O_NONBLOCK) != 0)
        die("pipe");
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0)
        guardian();
    close_end(&life_fd[0]);
    close_end(&registry_fd[0]);
}

/* After they started: the coordinator holds neither pipe, so the guardian
 * waits for the case's processes alone (and finish() reaps it). */
RUNTIME void guardian_detach(void)
{
    close_end(&life_fd[1]);
    close_end(&registry_fd[1]);
}

/* RLIMIT_FSIZE: the kernel sends SIGXFSZ with the EFBIG it returns. As in
 * the harness's worker, the signal is caught and is what the step
 * observed (si_code SI_USER, nothing done); `ignore_signal` replaces the
 * handler, and then the EFBIG is. Installed at a process's first step
 * (a forked child inherits it), before any step could ignore it. */
static volatile sig_atomic_t xfsz_raised;
static int xfsz_handled;

RUNTIME void on_xfsz(int sig)
{
    (void)sig;
    xfsz_raised = 1;
}

RUNTIME void step_begin(void)
{
    if (!xfsz_handled) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_xfsz;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGXFSZ, &sa, NULL) != 0)
            die("sigaction");
        xfsz_handled = 1;
    }
    xfsz_raised = 0;
}

RUNTIME void step_end(struct obs *o)
{
    if (!xfsz_raised)
        return;
    free(o->bytes);
    memset(o, 0, sizeof *o);
    o->kind = OUT_SIGNAL;
    o->signo = SIGXFSZ;
    o->code = SI_USER;
}

/* With root: no groups, gid and uid 65534 (nobody), which clears the
 * capability sets; then, for a process that had capabilities without
 * being root, the ambient set and capset(2) with empty sets. */
RUNTIME void drop_privileges(struct obs *o)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
                           setresuid(65534, 65534, 65534) != 0)) {
        failed(o);
        return;
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    check(o, syscall(SYS_capset, &h, d));
}

/* One read(2) of at most len bytes: a pipe gives what it holds. */
RUNTIME void read_once(struct obs *o, int fd, long long len)
{
    /* at least 8 bytes: set_bytes reads up to 8 when the count says so */
    unsigned char *buf = calloc(len > 8 ? (size_t)len : 8, 1);
    ssize_t n;
    if (!buf) {
        error(o, "out of memory");
        return;
    }
    n = read(fd, buf, (size_t)len);
    if (n < 0) {
        failed(o);
        free(buf);
        return;
    }
    set_bytes(o, buf, n);
}

/* An io_uring instance with its queues mapped, and its fixed buffer 0. */
struct ring {
    int valid, fd;
    struct io_uring_params p;
    char *sq, *cq;             /* the rings (one mapping with IORING_FEAT_SINGLE_MMAP) */
    size_t sq_len, cq_len;
    struct io_uring_sqe *sqes;
    char *addr;                /* the registered buffer */
    long long len;
};

RUNTIME void ring_close(struct ring *r)
{
    if (r->sqes && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->p.sq_entries * sizeof(struct io_uring_sqe));
    if (r->cq && r->cq != MAP_FAILED && r->cq != r->sq)
        munmap(r->cq, r->cq_len);
    if (r->sq && r->sq != MAP_FAILED)
        munmap(r->sq, r->sq_len);
    close(r->fd);
    memset(r, 0, sizeof *r);
}

/* io_uring_setup(2) and the three mappings; -1 with errno on failure. */
RUNTIME int ring_setup(struct ring *r, unsigned entries)
{
    int e;
    memset(r, 0, sizeof *r);
    r->fd = (int)syscall(__NR_io_uring_setup, entries, &r->p);
    if (r->fd < 0)
        return -1;
    r->sq_len = r->p.sq_off.array + r->p.sq_entries * sizeof(unsigned);
    r->cq_len = r->p.cq_off.cqes + r->p.cq_entries * sizeof(struct io_uring_cqe);
    if (r->p.features & IORING_FEAT_SINGLE_MMAP)
        r->sq_len = r->cq_len = r->sq_len > r->cq_len ? r->sq_len : r->cq_len;
    r->sq = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                 IORING_OFF_SQ_RING);
    if (r->sq == MAP_FAILED)
        goto fail;
    r->cq = (r->p.features & IORING_FEAT_SINGLE_MMAP)
                ? r->sq
                : mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                       IORING_OFF_CQ_RING);
    if (r->cq == MAP_FAILED)
        goto fail;
    r->sqes = mmap(NULL, r->p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        goto fail;
    return 0;
fail:
    e = errno;
    ring_close(r);
    errno = e;
    return -1;
}

/* A new ring of two entries (as the harness's), the range registered as
 * its fixed buffer 0 (IORING_REGISTER_BUFFERS: the kernel pins the pages
 * for writing, long-term, or refuses with an errno). A ring already under
 * the name is closed once the new one stands. */
RUNTIME void ring_register(struct obs *o, struct ring *r, char *addr, long long len)
{
    struct ring n;
    struct iovec iov = { addr, (size_t)len };
    if (ring_setup(&n, 2) != 0) {
        failed(o);
        return;
    }
    if (syscall(__NR_io_uring_register, n.fd, IORING_REGISTER_BUFFERS, &iov, 1) != 0) {
        failed(o);
        ring_close(&n);
        return;
    }
    n.valid = 1;
    n.addr = addr;
    n.len = len;
    if (r->valid)
        ring_close(r);
    *r = n;
}

RUNTIME int need_ring(struct obs *o, const struct ring *r, const char *name, int registering)
{
    if (!r->valid)
        error(o, "no io_uring ring named `%s` in this process%s", name,
              registering ? " (did its registration fail?)" : "");
    return r->valid;
}

/* IORING_OP_WRITE_FIXED or READ_FIXED with fixed buffer 0, from `at` in it
 * for len bytes (-1: the rest), submitted and waited for: the completion's
 * count, or its errno. */
RUNTIME void ring_fixed(struct obs *o, struct ring *r, int write, int fd, long long offset,
                       long long at, long long len)
{
    unsigned *sq_head = (unsigned *)(r->sq + r->p.sq_off.head);
    unsigned *sq_tail = (unsigned *)(r->sq + r->p.sq_off.tail);
    unsigned sq_mask = *(unsigned *)(r->sq + r->p.sq_off.ring_mask);
    unsigned *array = (unsigned *)(r->sq + r->p.sq_off.array);
    unsigned *cq_head = (unsigned *)(r->cq + r->p.cq_off.head);
    unsigned *cq_tail = (unsigned *)(r->cq + r->p.cq_off.tail);
    unsigned cq_mask = *(unsigned *)(r->cq + r->p.cq_off.ring_mask);
    struct io_uring_cqe *cqes = (struct io_uring_cqe *)(r->cq + r->p.cq_off.cqes);
    unsigned tail = *sq_tail, head;
    struct io_uring_sqe *sqe;
    int res;
    if (tail - __atomic_load_n(sq_head, __ATOMIC_ACQUIRE) >= r->p.sq_entries) {
        error(o, "io_uring submission queue full");
        return;
    }
    sqe = &r->sqes[tail & sq_mask];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = write ? IORING_OP_WRITE_FIXED : IORING_OP_READ_FIXED;
    sqe->fd = fd;
    sqe->off = (unsigned long long)offset;
    sqe->addr = (unsigned long long)(uintptr_t)(r->addr + at);
    sqe->len = (unsigned)(len >= 0 ? len : (r->len > at ? r->len - at : 0));
    sqe->buf_index = 0;
    array[tail & sq_mask] = tail & sq_mask;
    __atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
    if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
        failed(o);
        return;
    }
    head = *cq_head;
    if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE)) {
        error(o, "io_uring gave no completion after waiting");
        return;
    }
    res = cqes[head & cq_mask].res;
    __atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
    if (res < 0) {
        o->kind = OUT_ERRNO;
        o->err = -res;
        return;
    }
    o->has_value = 1;
    o->value = res;
}

/* IORING_UNREGISTER_BUFFERS, then the ring closed whatever it answered: the
 * pin ends. */
RUNTIME void ring_unregister(struct obs *o, struct ring *r)
{
    struct ring old = *r;
    r->valid = 0;
    if (syscall(__NR_io_uring_register, old.fd, IORING_UNREGISTER_BUFFERS, NULL, 0) != 0)
        failed(o);
    ring_close(&old);
}
/* ==== pins and system state (issue 18): end ==== */
