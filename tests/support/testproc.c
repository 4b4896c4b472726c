/* testproc — see testproc.h. */
#include "tests/support/testproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

pid_t testproc_spawn(char *const argv[], const char *logfile)
{
    if (!argv || !argv[0])
        return -1;
    pid_t pid = fork();
    if (pid != 0)
        return pid < 0 ? -1 : pid;
    /* child: only async-signal-safe calls until exec */
    if (logfile) {
        int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0)
            _exit(127);
        if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(127);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(argv[0], argv);
    _exit(127);
}

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

int testproc_wait_http(const char *url, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    int rc = -1;
    for (;;) {
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 500L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 300L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
        if (curl_easy_perform(c) == CURLE_OK) {
            rc = 0;
            break;
        }
        if (now_ms() >= deadline)
            break;
        nap_ms(50);
    }
    curl_easy_cleanup(c);
    return rc;
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int testproc_stop(pid_t pid, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
        return decode_status(st);
    if (r < 0)
        return -1;
    kill(pid, SIGTERM);
    long long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return decode_status(st);
        if (r < 0)
            return -1;
        nap_ms(10);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return -1;
}

int testproc_wait_exit(pid_t pid, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    long long deadline = now_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return decode_status(st);
        if (r < 0)
            return -1;
        if (now_ms() >= deadline)
            break;
        nap_ms(20);
    }
    testproc_stop(pid, 5000);
    return -2;
}

int testproc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}
