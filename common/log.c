/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "fileio.h"
#include "log.h"

static LogTarget log_target = LOG_TARGET_CONSOLE;
static int log_max_level = LOG_INFO;
static int kmsg_fd = -EBADF;
static const char *log_ident = "seedbed";

static const char *const log_target_table[_LOG_TARGET_MAX] = {
        [LOG_TARGET_AUTO] = "auto",
        [LOG_TARGET_CONSOLE] = "console",
        [LOG_TARGET_JOURNAL] = "journal",
        [LOG_TARGET_KMSG] = "kmsg",
};

LogTarget log_target_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(log_target_table); i++)
                if (streq(s, log_target_table[i]))
                        return (LogTarget) i;
        return _LOG_TARGET_INVALID;
}

const char *log_target_to_string(LogTarget t) {
        if (t < 0 || t >= _LOG_TARGET_MAX)
                return NULL;
        return log_target_table[t];
}

/* systemd sets JOURNAL_STREAM to "DEV:INODE" of the stream it connected to
 * our stderr; if stderr was redirected since, it is not the journal. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
}

/* An initramfs without a journal: the kernel log is the only place that
 * lasts, and the console only shows it at the configured loglevel. */
static bool in_journal_less_initrd(void) {
        return in_initrd_at(NULL) &&
               access("/run/systemd/journal/socket", F_OK) < 0;
}

void log_set_target(LogTarget target) {
        if (target == LOG_TARGET_AUTO) {
                if (stderr_is_journal())
                        target = LOG_TARGET_JOURNAL;
                else if (in_journal_less_initrd())
                        target = LOG_TARGET_KMSG;
                else
                        target = LOG_TARGET_CONSOLE;
        }

        if (target == LOG_TARGET_KMSG && kmsg_fd < 0) {
                kmsg_fd = open("/dev/kmsg", O_WRONLY | O_NOCTTY | O_CLOEXEC);
                if (kmsg_fd < 0)
                        target = LOG_TARGET_CONSOLE;
        }
        if (target != LOG_TARGET_KMSG)
                kmsg_fd = safe_close(kmsg_fd);

        log_target = target;
}

LogTarget log_get_target(void) {
        return log_target;
}

void log_setup(const char *ident) {
        const char *e;
        LogTarget t = LOG_TARGET_AUTO;

        if (ident)
                log_ident = ident;

        e = getenv("SEEDBED_LOG_TARGET");
        if (e && log_target_from_string(e) >= 0)
                t = log_target_from_string(e);
        log_set_target(t);

        e = getenv("SEEDBED_LOG_LEVEL");
        if (e && log_level_from_string(e) >= 0)
                log_max_level = log_level_from_string(e);
}

void log_set_max_level(int level) {
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

int log_level_from_string(const char *s) {
        static const char *const names[] = {
                [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit",
                [LOG_ERR] = "err",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i]))
                        return (int) i;
        if (streq(s, "error"))
                return LOG_ERR;
        return -EINVAL;
}

int log_internal(int level, int error, const char *format, ...) {
        char buf[2048];
        int saved = errno;
        va_list ap;

        if (error < 0)
                error = -error;

        /* %m in the format prints the error we were given, not whatever
         * errno happens to hold. */
        errno = error;
        va_start(ap, format);
        (void) vsnprintf(buf, sizeof buf, format, ap);
        va_end(ap);

        switch (log_target) {
        case LOG_TARGET_KMSG: {
                /* Facility LOG_DAEMON, so the line is not mistaken for the
                 * kernel's own; one write() is one kmsg record. */
                char line[sizeof buf + 64];
                int l = snprintf(line, sizeof line, "<%d>%s[%d]: %s\n", LOG_DAEMON | level,
                                 log_ident, (int) getpid(), buf);
                if (l > 0)
                        (void) !write(kmsg_fd, line, MIN((size_t) l, sizeof line - 1));
                break;
        }
        case LOG_TARGET_JOURNAL:
                (void) fprintf(stderr, "<%d>%s\n", level, buf);
                break;
        default:
                (void) fprintf(stderr, "%s\n", buf);
                break;
        }

        errno = saved;
        return -error;
}

/* Whether the kernel prints kmsg lines of this level on the console
 * (the first field of /proc/sys/kernel/printk; "quiet" makes it 4). */
static bool console_shows(int level) {
        char buf[64] = "";
        int fd, console_level;
        ssize_t n;

        fd = open("/proc/sys/kernel/printk", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        n = read(fd, buf, sizeof buf - 1);
        (void) close(fd);
        if (n <= 0 || sscanf(buf, "%d", &console_level) != 1)
                return false;
        return level < console_level;
}

void log_console_status(const char *format, ...) {
        char buf[1024];
        va_list ap;
        int fd;

        va_start(ap, format);
        (void) vsnprintf(buf, sizeof buf, format, ap);
        va_end(ap);

        (void) log_internal(LOG_NOTICE, 0, "%s", buf);
        if (log_target != LOG_TARGET_KMSG || console_shows(LOG_NOTICE))
                return;

        /* Non-blocking: a console that cannot take the line must not
         * hold up the wait it reports on. */
        fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return;
        (void) dprintf(fd, "%s: %s\n", log_ident, buf);
        (void) close(fd);
}

int log_set_max_level_from_string(const char *s) {
        int l = log_level_from_string(s);

        if (l < 0)
                return log_error_errno(EINVAL, "Unknown log level '%s'.", s);
        log_set_max_level(l);
        return 0;
}

int log_set_target_from_string(const char *s) {
        LogTarget t = log_target_from_string(s);

        if (t < 0)
                return log_error_errno(EINVAL, "Unknown log target '%s'.", s);
        log_set_target(t);
        return 0;
}
