/* SPDX-License-Identifier: MIT */
#pragma once

/* One epoll loop for the whole device: every fd non-blocking, every
 * handler short.  Timers are not objects: before each wait the loop asks
 * its owner for the next deadline, so rate-limit wakeups for any number
 * of VMs cost one computation, not one timerfd each. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "macro.h"

typedef struct Loop Loop;
typedef struct LoopIo LoopIo;

typedef void (*loop_io_fn)(LoopIo *io, int fd, uint32_t events, void *userdata);
/* Returns the CLOCK_MONOTONIC time the loop must wake at, or
 * USEC_INFINITY. */
typedef usec_t (*loop_prepare_fn)(void *userdata);
/* Runs after every wakeup, whatever woke the loop. */
typedef void (*loop_tick_fn)(usec_t now, void *userdata);

int loop_new(Loop **ret);
Loop *loop_free(Loop *l);

/* Watches fd (not owned) for events.  ret may be NULL. */
int loop_add_io(Loop *l, int fd, uint32_t events, loop_io_fn fn, void *userdata, LoopIo **ret);
int loop_io_set_events(LoopIo *io, uint32_t events);
/* Stops watching; safe inside any handler, even the io's own. */
void loop_io_free(LoopIo *io);

void loop_set_hooks(Loop *l, loop_prepare_fn prepare, loop_tick_fn tick, void *userdata);

/* Runs until loop_exit(); returns the code given to it.  May be run
 * again after. */
int loop_run(Loop *l);
void loop_exit(Loop *l, int code);
