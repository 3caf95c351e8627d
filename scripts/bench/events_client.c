#define _GNU_SOURCE
/* Many /api/events subscribers read by one epoll loop, fast enough that the server, not the
 * client, sets the pace (scripts/bench-events.sh compiles it into /tmp).
 * usage: events_client PORT SUBSCRIBERS SECONDS
 * Prints "marker <k> <subscriber> <monotonic ns>" when a subscriber first sees the task titled
 * marker-<k>, then "events <subscriber> <count>" per subscriber and "ended <count>". */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TAIL 64
typedef struct { int fd; long events; int ended; size_t tail; char buffer[TAIL + 65536]; } stream_t;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: events_client PORT SUBSCRIBERS SECONDS\n"); return 2; }
    int port = atoi(argv[1]), count = atoi(argv[2]);
    double seconds = atof(argv[3]);
    stream_t *streams = calloc(count, sizeof(stream_t));
    int epoll = epoll_create1(0);
    const char *request = "GET /api/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n";
    for (int i = 0; i < count; i++) {
        struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(port) };
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
        streams[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(streams[i].fd, (struct sockaddr *)&address, sizeof address) != 0) { perror("connect"); return 1; }
        if (write(streams[i].fd, request, strlen(request)) < 0) { perror("write"); return 1; }
        struct epoll_event event = { .events = EPOLLIN, .data.u32 = i };
        epoll_ctl(epoll, EPOLL_CTL_ADD, streams[i].fd, &event);
    }
    fprintf(stderr, "subscribed %d\n", count);
    long long deadline = now_ns() + (long long)(seconds * 1e9);
    struct epoll_event ready[256];
    while (now_ns() < deadline) {
        int n = epoll_wait(epoll, ready, 256, 100);
        for (int r = 0; r < n; r++) {
            stream_t *s = &streams[ready[r].data.u32];
            ssize_t got = read(s->fd, s->buffer + s->tail, sizeof s->buffer - s->tail);
            if (got <= 0) {
                if (got < 0 && errno == EINTR) continue;
                s->ended = 1;
                epoll_ctl(epoll, EPOLL_CTL_DEL, s->fd, NULL);
                continue;
            }
            long long at = now_ns();
            size_t length = s->tail + (size_t)got;
            /* Patterns that end inside the old tail were counted by the previous read. */
            for (char *p = s->buffer; (p = memmem(p, length - (p - s->buffer), "\nevent: ", 8)); p += 8)
                if ((size_t)(p - s->buffer) + 8 > s->tail) s->events++;
            for (char *p = s->buffer; (p = memmem(p, length - (p - s->buffer), "\"title\":\"marker-", 16)); p += 16) {
                char *end = memchr(p + 16, '"', length - (p + 16 - s->buffer));
                if (end && (size_t)(end - s->buffer) >= s->tail) printf("marker %ld %u %lld\n", strtol(p + 16, NULL, 10), ready[r].data.u32, at);
            }
            size_t keep = length < TAIL ? length : TAIL;
            memmove(s->buffer, s->buffer + length - keep, keep);
            s->tail = keep;
        }
    }
    int ended = 0;
    for (int i = 0; i < count; i++) { printf("events %d %ld\n", i, streams[i].events); ended += streams[i].ended; }
    printf("ended %d\n", ended);
    return 0;
}
