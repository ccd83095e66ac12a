# CPU time in nanoseconds of process $1 and its direct children (nginx's worker): the scheduler's own account of
# each of their threads (/proc/PID/task/*/schedstat), summed. Sourced by the benchmark scripts.
#
# Not utime+stime from /proc/PID/stat: this kernel (CONFIG_TICK_CPU_ACCOUNTING, HZ=250) charges a whole 4 ms
# tick to whichever task it interrupts, which skews a process that wakes thousands of times a second by ±10 %
# from run to run. Threads that exited are not counted: read it around runs in which none ends.
cpu_nanos() {
    local pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        cat /proc/"$pid"/task/*/schedstat 2>/dev/null || true
    done | awk '{ s += $1 } END { printf "%.0f\n", s }'
}
