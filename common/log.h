/* SPDX-License-Identifier: MIT */
#pragma once

/* Logging for both programs.  Where the messages go depends on where the
 * program runs:
 *   journal  a systemd service (JOURNAL_STREAM names our stderr): stderr
 *            lines with "<N>" priority prefixes, which journald parses;
 *   kmsg     an initramfs with no journal yet: /dev/kmsg, so the lines
 *            land in the kernel log beside the boot's other messages and
 *            survive into the real root's journal;
 *   console  anything else (a terminal, a test): plain stderr lines.
 * Helpers return error codes; the caller that decides logs, once. */

#include <syslog.h>

#include "macro.h"

typedef enum LogTarget {
        LOG_TARGET_AUTO,
        LOG_TARGET_CONSOLE,
        LOG_TARGET_JOURNAL,
        LOG_TARGET_KMSG,
        _LOG_TARGET_MAX,
        _LOG_TARGET_INVALID = -EINVAL,
} LogTarget;

/* Picks the target (SEEDBED_LOG_TARGET overrides the automatic choice)
 * and the identifier used on kmsg. */
void log_setup(const char *ident);

void log_set_target(LogTarget target);
LogTarget log_get_target(void);
LogTarget log_target_from_string(const char *s);
const char *log_target_to_string(LogTarget t);

void log_set_max_level(int level);
int log_get_max_level(void);
/* Accepts syslog names: "debug", "info", "notice", "warning", "err". */
int log_level_from_string(const char *s);

/* --log-level=LEVEL and --log-target=TARGET, as both programs take them:
 * apply the value, or log what is wrong and return -EINVAL. */
int log_set_max_level_from_string(const char *s);
int log_set_target_from_string(const char *s);

/* Writes one message; returns -abs(error), so callers can
 * "return log_error_errno(r, ...)".  The format may use %m for error. */
int log_internal(int level, int error, const char *format, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...)                                       \
        ({                                                                      \
                int _level_ = (level), _e_ = (error);                           \
                (log_get_max_level() >= _level_) ? log_internal(_level_, _e_, __VA_ARGS__) \
                                                 : -abs(_e_);                   \
        })

#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...) log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)

/* A line about a wait that holds up the boot ("waiting for ..., 12 s
 * left").  It must reach the console even when the kernel log's console
 * level hides notices ("quiet"), as systemd's start-job lines do: on the
 * kmsg target it is also written to /dev/console. */
void log_console_status(const char *format, ...) _printf_(1, 2);

/* For allocation failures, which have nothing else to say. */
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
