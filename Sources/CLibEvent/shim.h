#ifndef CLIBEVENT_SHIM_H
#define CLIBEVENT_SHIM_H
/* System headers first: libevent's event-config.h defines _GNU_SOURCE, which would otherwise
   give fd_set a layout that differs from the one Swift's Glibc module sees. */
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <sys/prctl.h>

/* Names the calling thread (shown by top -H, perf and debuggers); prctl is variadic, so Swift
   cannot call it directly. */
static inline void clibevent_name_current_thread(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}
#endif
