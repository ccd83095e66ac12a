// CPU shims: cgroup cpu.max parsing, affinity listing and pinning. Affinity changes happen on helper threads so
// the main thread keeps the mask it started with.
#include "check.h"
#include <limits.h>

static void test_parse_cpu_max(void) {
    static const struct {
        const char *text;
        int expected;
    } cases[] = {
        {"max 100000\n", 0},
        {"max 100000", 0},
        {"200000 100000\n", 2},
        {"150000 100000", 2},
        {"50000 100000", 1},
        {"100000 100000\n", 1},
        {"100001 100000\n", 2},
        {"1 1000000\n", 1},
        {"  300000 100000\n", 3},
        {"100000 100000  \n", 1},
        {"6553600000 100000\n", 65536},           // clamped
        {"9223372036854775807 100000\n", 65536},  // quota + period would overflow
        {"9223372036854775807 9223372036854775807\n", 1},
        {"", -EINVAL},
        {"\n", -EINVAL},
        {"abc", -EINVAL},
        {"100000", -EINVAL},
        {"100000\n", -EINVAL},
        {"100000 ", -EINVAL},
        {"-5 100000", -EINVAL},
        {"0 100000", -EINVAL},
        {"+5 100000", -EINVAL},
        {"100 0", -EINVAL},
        {"100 -100000", -EINVAL},
        {"100000 +100000", -EINVAL},
        {"100000 abc", -EINVAL},
        {"100000 100000 junk", -EINVAL},
        {"100000 100000\njunk", -EINVAL},
        {"100000\t100000", -EINVAL},
        {"100000\n100000", -EINVAL},
        {"99999999999999999999 100000", -EINVAL},  // ERANGE
        {"100000 99999999999999999999", -EINVAL},
        {"max", -EINVAL},
        {"max\n", -EINVAL},
        {"max abc", -EINVAL},
        {"maxjunk 100000", -EINVAL},
        {"max 0", -EINVAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = CTernLinux_parse_cpu_max(cases[i].text);
        if (got != cases[i].expected) {
            fprintf(stderr, "parse_cpu_max(\"%s\") = %d, expected %d\n", cases[i].text, got, cases[i].expected);
        }
        CHECK_EQ(got, cases[i].expected);
    }
    CHECK_EQ(CTernLinux_parse_cpu_max(NULL), -EINVAL);
}

/// The CPUs of the process mask, ascending.
static int process_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -errno;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[n++] = cpu;
    }
    return n;
}

static int target_cpu;  // the CPU the helper threads restrict themselves to

static void *affinity_restricted(void *unused) {
    (void)unused;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(target_cpu, &one);
    CHECK_EQ(sched_setaffinity(0, sizeof(one), &one), 0);  // as `taskset -c N` would
    int cpus[8] = {-1, -1};
    CHECK_EQ(CTernLinux_affinity_cpus(cpus, 8), 1);
    CHECK_EQ(cpus[0], target_cpu);
    CHECK_EQ(cpus[1], -1);
    return NULL;
}

static void test_affinity_cpus(void) {
    static int expected[CPU_SETSIZE], got[CPU_SETSIZE];
    int n = process_cpus(expected, CPU_SETSIZE);
    CHECK(n >= 1);
    CHECK_EQ(CTernLinux_affinity_cpus(got, CPU_SETSIZE), n);
    CHECK(memcmp(expected, got, (size_t)n * sizeof(int)) == 0);

    // The count is bounded by the capacity; nothing is written past it.
    int two[2] = {-1, -1};
    CHECK_EQ(CTernLinux_affinity_cpus(two, 1), 1);
    CHECK_EQ(two[0], expected[0]);
    CHECK_EQ(two[1], -1);
    CHECK_EQ(CTernLinux_affinity_cpus(two, 0), 0);

    target_cpu = expected[n - 1];
    pthread_t thread;
    CHECK_EQ(pthread_create(&thread, NULL, affinity_restricted, NULL), 0);
    pthread_join(thread, NULL);
    CHECK_EQ(CTernLinux_affinity_cpus(got, CPU_SETSIZE), n);  // the main thread kept its mask
}

static void *pin_thread(void *unused) {
    (void)unused;
    CHECK_EQ(CTernLinux_pin_to_cpu(target_cpu), 0);
    cpu_set_t set;
    CHECK_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
    CHECK_EQ(CPU_COUNT(&set), 1);
    CHECK(CPU_ISSET(target_cpu, &set));
    CHECK_EQ(sched_getcpu(), target_cpu);  // the kernel migrates the caller before returning

    // Rejected requests leave the mask as it was.
    CHECK_EQ(CTernLinux_pin_to_cpu(-1), -EINVAL);
    CHECK_EQ(CTernLinux_pin_to_cpu(CPU_SETSIZE), -EINVAL);
    CHECK_EQ(CTernLinux_pin_to_cpu(INT_MAX), -EINVAL);
    long configured = sysconf(_SC_NPROCESSORS_CONF);
    if (configured > 0 && configured < CPU_SETSIZE) {
        CHECK_EQ(CTernLinux_pin_to_cpu(CPU_SETSIZE - 1), -EINVAL);  // a CPU this machine does not have
    }
    CHECK_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
    CHECK_EQ(CPU_COUNT(&set), 1);
    CHECK(CPU_ISSET(target_cpu, &set));
    return NULL;
}

static void test_pin_to_cpu(void) {
    int cpus[CPU_SETSIZE];
    int n = process_cpus(cpus, CPU_SETSIZE);
    CHECK(n >= 1);
    target_cpu = cpus[n - 1];
    pthread_t thread;
    CHECK_EQ(pthread_create(&thread, NULL, pin_thread, NULL), 0);
    pthread_join(thread, NULL);
}

int main(void) {
    test_parse_cpu_max();
    test_affinity_cpus();
    test_pin_to_cpu();
    return check_finish("cshim.cpu");
}
