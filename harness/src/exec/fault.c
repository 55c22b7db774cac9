/*
 * Memory accesses to mappings that may fault, and recovery from the fault.
 *
 * A case may expect a load or store to raise SIGBUS or SIGSEGV, and a fault
 * nobody expected must fail the step, not kill the worker. Recovering means
 * leaving the faulting instruction: sigsetjmp/siglongjmp does that portably,
 * but jumping over Rust frames is undefined behaviour, so the accesses and
 * the jump both live here in C and the jump never crosses a Rust frame.
 *
 * SIGSEGV and SIGBUS of an access are delivered to the thread that made
 * it, and a worker may have several threads (`spawn_thread`) faulting at
 * once, so the jump buffer and what the handler records are per thread.
 */
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct mc_fault {
    int signo;
    int code;
    uintptr_t addr;
    uint64_t done; /* bytes (or increments) completed before the fault */
};

static __thread sigjmp_buf fault_env;
static __thread volatile sig_atomic_t armed;
static __thread volatile int fault_signo, fault_code;
static __thread volatile uintptr_t fault_addr;

static void on_fault(int signo, siginfo_t *info, void *ctx)
{
    (void)ctx;
    if (!armed) {
        /* A fault outside a guarded access is a harness bug: die of it. */
        signal(signo, SIG_DFL);
        raise(signo);
        return;
    }
    armed = 0;
    fault_signo = signo;
    fault_code = info->si_code;
    fault_addr = (uintptr_t)info->si_addr;
    siglongjmp(fault_env, 1);
}

int mc_install_fault_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fault;
    /* SA_NODEFER: the handler runs with the mask of the access, so the
     * jump out of it leaves the mask as it was, and sigsetjmp need not save
     * and restore it: that was a system call (rt_sigprocmask) on every
     * access, as much as a step's own work. */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, NULL) != 0)
        return -1;
    if (sigaction(SIGSEGV, &sa, NULL) != 0)
        return -1;
    return 0;
}

static void record(struct mc_fault *f, uint64_t done)
{
    f->signo = fault_signo;
    f->code = fault_code;
    f->addr = fault_addr;
    f->done = done;
}

/* Stores n bytes into mapped memory, one volatile byte store at a time. */
int mc_store(volatile uint8_t *dst, const uint8_t *src, size_t n, struct mc_fault *f)
{
    volatile size_t i = 0;
    if (sigsetjmp(fault_env, 0)) {
        record(f, i);
        return -1;
    }
    armed = 1;
    for (; i < n; i++)
        dst[i] = src[i];
    armed = 0;
    return 0;
}

/* Loads n bytes from mapped memory, one volatile byte load at a time. */
int mc_load(uint8_t *dst, const volatile uint8_t *src, size_t n, struct mc_fault *f)
{
    volatile size_t i = 0;
    if (sigsetjmp(fault_env, 0)) {
        record(f, i);
        return -1;
    }
    armed = 1;
    for (; i < n; i++)
        dst[i] = src[i];
    armed = 0;
    return 0;
}

/*
 * Adds 1 to the integer at p, count times. atomic: a locked add that never
 * loses an update. Otherwise a plain volatile load, add, store, which loses
 * updates when another process increments the same word at the same time.
 */
int mc_increment(volatile void *p, uint64_t count, int atomic, int width, struct mc_fault *f)
{
    volatile uint64_t i = 0;
    if (sigsetjmp(fault_env, 0)) {
        record(f, i);
        return -1;
    }
    armed = 1;
    if (width == 8) {
        volatile uint64_t *q = p;
        for (; i < count; i++) {
            if (atomic)
                __atomic_fetch_add(q, 1, __ATOMIC_SEQ_CST);
            else
                *q = *q + 1;
        }
    } else {
        volatile uint32_t *q = p;
        for (; i < count; i++) {
            if (atomic)
                __atomic_fetch_add(q, 1, __ATOMIC_SEQ_CST);
            else
                *q = *q + 1;
        }
    }
    armed = 0;
    return 0;
}
