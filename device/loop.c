/* SPDX-License-Identifier: MIT */
#include <sys/epoll.h>
#include <time.h>

#include "fileio.h"
#include "log.h"
#include "loop.h"

#define LOOP_EVENTS_MAX 64

struct LoopIo {
        Loop *loop;
        int fd;
        uint32_t events;
        loop_io_fn fn;
        void *userdata;
        bool dead;
        LoopIo *next_dead;
        LoopIo *prev, *next; /* every live io, so loop_free() can free them */
};

struct Loop {
        int epoll_fd;
        bool exiting;
        int exit_code;
        loop_prepare_fn prepare;
        loop_tick_fn tick;
        void *hook_userdata;
        /* Freed after the current batch of events: a later event in the
         * same batch may still point at them. */
        LoopIo *dead;
        LoopIo *live;
};

int loop_new(Loop **ret) {
        Loop *l = calloc(1, sizeof *l);

        if (!l)
                return -ENOMEM;
        l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (l->epoll_fd < 0) {
                int r = -errno;
                free(l);
                return r;
        }
        *ret = l;
        return 0;
}

static void loop_reap(Loop *l) {
        while (l->dead) {
                LoopIo *io = l->dead;
                l->dead = io->next_dead;
                free(io);
        }
}

Loop *loop_free(Loop *l) {
        if (!l)
                return NULL;
        while (l->live)
                loop_io_free(l->live);
        loop_reap(l);
        safe_close(l->epoll_fd);
        free(l);
        return NULL;
}

int loop_add_io(Loop *l, int fd, uint32_t events, loop_io_fn fn, void *userdata, LoopIo **ret) {
        struct epoll_event ev = { .events = events };
        LoopIo *io = calloc(1, sizeof *io);

        if (!io)
                return -ENOMEM;
        *io = (LoopIo) { .loop = l, .fd = fd, .events = events, .fn = fn, .userdata = userdata };
        ev.data.ptr = io;
        if (epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                int r = -errno;
                free(io);
                return r;
        }
        io->next = l->live;
        if (l->live)
                l->live->prev = io;
        l->live = io;
        if (ret)
                *ret = io;
        return 0;
}

int loop_io_set_events(LoopIo *io, uint32_t events) {
        struct epoll_event ev = { .events = events, .data.ptr = io };

        if (io->events == events)
                return 0;
        if (epoll_ctl(io->loop->epoll_fd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
                return -errno;
        io->events = events;
        return 0;
}

void loop_io_free(LoopIo *io) {
        if (!io || io->dead)
                return;
        /* Before the fd is closed: epoll keys on the open file, and an
         * eventfd QEMU still holds would stay registered otherwise. */
        (void) epoll_ctl(io->loop->epoll_fd, EPOLL_CTL_DEL, io->fd, NULL);
        if (io->prev)
                io->prev->next = io->next;
        else
                io->loop->live = io->next;
        if (io->next)
                io->next->prev = io->prev;
        io->dead = true;
        io->next_dead = io->loop->dead;
        io->loop->dead = io;
}

void loop_set_hooks(Loop *l, loop_prepare_fn prepare, loop_tick_fn tick, void *userdata) {
        l->prepare = prepare;
        l->tick = tick;
        l->hook_userdata = userdata;
}

void loop_exit(Loop *l, int code) {
        l->exiting = true;
        l->exit_code = code;
}

int loop_run(Loop *l) {
        struct epoll_event events[LOOP_EVENTS_MAX];

        while (!l->exiting) {
                usec_t wake = l->prepare ? l->prepare(l->hook_userdata) : USEC_INFINITY;
                int timeout = -1, n;

                if (wake != USEC_INFINITY) {
                        usec_t now = now_usec(CLOCK_MONOTONIC);
                        /* Round up: waking a millisecond early would spin. */
                        timeout = wake <= now ? 0 : (int) MIN((wake - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC, (usec_t) 60000);
                }

                n = epoll_wait(l->epoll_fd, events, LOOP_EVENTS_MAX, timeout);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "epoll_wait() failed: %m");
                }

                /* Nothing runs once exiting: after a handover the state is
                 * the successor's, and serving one more request from it
                 * would serve it twice. */
                for (int i = 0; i < n && !l->exiting; i++) {
                        LoopIo *io = events[i].data.ptr;
                        if (!io->dead)
                                io->fn(io, io->fd, events[i].events, io->userdata);
                }
                if (l->tick && !l->exiting)
                        l->tick(now_usec(CLOCK_MONOTONIC), l->hook_userdata);
                loop_reap(l);
        }
        /* Ready to run again: a test drives the loop in steps. */
        l->exiting = false;
        return l->exit_code;
}
