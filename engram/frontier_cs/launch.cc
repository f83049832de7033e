// Runs inside the sandbox: start one program with a judge's limits and report what it used.
//
// Compiled once per sandbox backend (like a checker) and run by the judge for every program, checker
// and interactor. It opens the program's standard streams (files, or the named pipes of an
// interactive case, in the order given so that two launchers meeting on the same pipes never wait for
// each other), forks, sets the limits the upstream judge sets -- CPU time, address space and/or data
// size, stack, file size -- execs, enforces the wall-clock limit on the program's whole process group,
// and prints one JSON line: exit status, signal, CPU and wall seconds, peak resident memory.
//
// Written in C so that the program's peak memory is its own (a forked interpreter would count its size
// into it) and so that starting it costs next to nothing. Only this process holds the pipe the report
// goes to: the program gets its own files as streams and none of the launcher's descriptors, and the
// launcher makes itself non-dumpable so that a program running as the same user cannot reach its
// descriptors through /proc. The sandbox around both keeps the program from everything else.
//
// Usage: launch [--sweep] CPU_S WALL_S AS DATA STACK FSIZE N_STREAMS [PATH MODE FD]... -- PROGRAM [ARG]...
// (limits in seconds and bytes, 0 = no limit of that kind; MODE is r or w).
//
// --sweep is for a container that runs many cases one after another (the docker backend), where the
// launcher is alone in the container but for its idle init when it starts. After the program it kills
// every process it may signal (all of the container's: they share its uid) until /proc shows none,
// then checks that nothing is left where the next case could find it (/tmp, /dev/mqueue, System V IPC
// objects); the report's "clean" says whether the container may serve another case. It also reports
// the kills of the container's memory cgroup during the run ("oom_kills"), which the engine only
// reports per container. Never pass it outside such a container: it would kill the caller's processes.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void limit(int resource, unsigned long long value) {
    if (value == 0) return;
    struct rlimit current;
    getrlimit(resource, &current);
    rlim_t wanted = (rlim_t)value;
    if (current.rlim_max != RLIM_INFINITY && wanted > current.rlim_max) wanted = current.rlim_max;
    struct rlimit next = {wanted, wanted};
    setrlimit(resource, &next);
}

static void cpu_limit(double seconds) {
    struct rlimit current;
    getrlimit(RLIMIT_CPU, &current);
    rlim_t soft = (rlim_t)ceil(seconds);
    if (soft < 1) soft = 1;
    if (current.rlim_max != RLIM_INFINITY && soft + 1 > current.rlim_max) soft = current.rlim_max > 1 ? current.rlim_max - 1 : 1;
    struct rlimit next = {soft, soft + 1};
    setrlimit(RLIMIT_CPU, &next);
}

static long oom_kills(void) {
    // cgroup v1 keeps the count in memory.oom_control, v2 in memory.events; -1 when neither is readable.
    const char *paths[] = {"/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"};
    for (int i = 0; i < 2; i++) {
        FILE *file = fopen(paths[i], "r");
        if (!file) continue;
        char name[64];
        long value;
        while (fscanf(file, "%63s %ld", name, &value) == 2) {
            if (strcmp(name, "oom_kill") == 0) {
                fclose(file);
                return value;
            }
        }
        fclose(file);
    }
    return -1;
}

static int others_alive(void) {
    // Processes of this pid namespace other than its init and this launcher, zombies included.
    DIR *proc = opendir("/proc");
    if (!proc) return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end == '\0' && pid > 1 && pid != getpid()) count++;
    }
    closedir(proc);
    return count;
}

static int nothing_left_in(const char *path) {
    // Only root's entries: the engine's mount points (the judge's folders may lie under /tmp); whatever the
    // unprivileged programs made is theirs.
    DIR *dir = opendir(path);
    if (!dir) return errno == ENOENT;
    int empty = 1;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        struct stat info;
        if (fstatat(dirfd(dir), entry->d_name, &info, AT_SYMLINK_NOFOLLOW) != 0 || info.st_uid != 0) empty = 0;
    }
    closedir(dir);
    return empty;
}

static int no_ipc_objects(void) {
    // Each /proc/sysvipc table has one header line, then a line per live object.
    const char *tables[] = {"/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem"};
    for (int i = 0; i < 3; i++) {
        FILE *file = fopen(tables[i], "r");
        if (!file) continue;
        int lines = 0, ch;
        while ((ch = fgetc(file)) != EOF) lines += ch == '\n';
        fclose(file);
        if (lines > 1) return 0;
    }
    return 1;
}

static int sweep(void) {
    // Orphans of the program are this launcher's children (it is their subreaper): reap them as they die.
    for (int round = 0; round < 400; round++) {
        kill(-1, SIGKILL);
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        int left = others_alive();
        if (left == 0) return nothing_left_in("/tmp") && nothing_left_in("/dev/mqueue") && no_ipc_objects();
        if (left < 0) return 0;
        struct timespec pause = {0, 5000000};
        nanosleep(&pause, NULL);
    }
    return 0;
}

int main(int argc, char **argv) {
    int sweeping = argc > 1 && strcmp(argv[1], "--sweep") == 0;
    if (sweeping) {
        argv++;
        argc--;
        prctl(PR_SET_CHILD_SUBREAPER, 1);
    }
    if (argc < 9) {
        fprintf(stderr, "launch: usage: CPU_S WALL_S AS DATA STACK FSIZE N_STREAMS [PATH MODE FD]... -- PROGRAM\n");
        return 2;
    }
    double cpu_s = atof(argv[1]), wall_s = atof(argv[2]);
    unsigned long long address_space = strtoull(argv[3], NULL, 10), data = strtoull(argv[4], NULL, 10);
    unsigned long long stack = strtoull(argv[5], NULL, 10), file_size = strtoull(argv[6], NULL, 10);
    int n_streams = atoi(argv[7]);
    int at = 8;
    int fds[3] = {-1, -1, -1};
    for (int i = 0; i < n_streams; i++, at += 3) {
        if (at + 2 >= argc) return 2;
        int target = atoi(argv[at + 2]);
        int flags = argv[at + 1][0] == 'r' ? O_RDONLY : (O_WRONLY | O_CREAT | O_TRUNC);
        int fd = open(argv[at], flags | O_CLOEXEC, 0644);
        if (fd < 0 || target < 0 || target > 2) {
            fprintf(stderr, "launch: cannot open %s: %s\n", argv[at], strerror(errno));
            return 2;
        }
        fds[target] = fd;
    }
    if (at >= argc || strcmp(argv[at], "--") != 0 || at + 1 >= argc) return 2;
    char **program = argv + at + 1;
    for (int target = 0; target < 3; target++) {
        if (fds[target] < 0) fds[target] = open("/dev/null", (target == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
    }
    prctl(PR_SET_DUMPABLE, 0);
    sigset_t children;
    sigemptyset(&children);
    sigaddset(&children, SIGCHLD);
    sigprocmask(SIG_BLOCK, &children, NULL);
    long ooms_before = sweeping ? oom_kills() : -1;
    double started = now();
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sigprocmask(SIG_UNBLOCK, &children, NULL);
        for (int target = 0; target < 3; target++) dup2(fds[target], target);  // dup2 clears close-on-exec
        for (int fd = 3; fd < 1024; fd++) close(fd);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        cpu_limit(cpu_s);
        limit(RLIMIT_AS, address_space);
        limit(RLIMIT_DATA, data);
        limit(RLIMIT_STACK, stack);
        limit(RLIMIT_FSIZE, file_size);
        char *env[] = {(char *)"PATH=/usr/bin:/bin", NULL};
        execve(program[0], program, env);
        dprintf(2, "launch: cannot start %s: %s\n", program[0], strerror(errno));
        _exit(127);
    }
    for (int target = 0; target < 3; target++) close(fds[target]);
    const char *killed = NULL;
    int status = 0;
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    for (;;) {
        pid_t done = wait4(pid, &status, WNOHANG, &usage);
        if (done == pid) break;
        double remaining = started + wall_s - now();
        if (remaining <= 0) {
            killed = "wall";
            break;
        }
        struct timespec wait = {(time_t)remaining, (long)((remaining - (time_t)remaining) * 1e9)};
        sigtimedwait(&children, NULL, &wait);
    }
    kill(-pid, SIGKILL);  // whatever the program started must not outlive it, nor keep writing its output
    if (killed) wait4(pid, &status, 0, &usage);
    double wall = now() - started;
    double cpu = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
    char exit_text[16] = "null", signal_text[16] = "null";
    if (WIFEXITED(status)) snprintf(exit_text, sizeof exit_text, "%d", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) snprintf(signal_text, sizeof signal_text, "%d", WTERMSIG(status));
    const char *clean = "null";
    char oom_text[24] = "null";
    if (sweeping) {
        clean = sweep() ? "true" : "false";
        long ooms_after = oom_kills();
        if (ooms_before >= 0 && ooms_after >= 0) snprintf(oom_text, sizeof oom_text, "%ld", ooms_after - ooms_before);
    }
    printf("\n{\"exit\": %s, \"signal\": %s, \"cpu_s\": %.6f, \"wall_s\": %.6f, \"rss_bytes\": %lld, \"killed\": %s, "
           "\"clean\": %s, \"oom_kills\": %s}\n",
           exit_text, signal_text, cpu, wall, (long long)usage.ru_maxrss * 1024, killed ? "\"wall\"" : "null",
           clean, oom_text);
    return 0;
}
