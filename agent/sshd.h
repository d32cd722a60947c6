/* SPDX-License-Identifier: MIT */
#pragma once

/* Making a running sshd serve the host keys now on disk.  sshd reads its
 * host keys when it starts and on SIGHUP, when it executes itself again;
 * what a running one serves to new connections in between depends on the
 * OpenSSH release, so it is reloaded.  The service manager
 * is asked, so that the unit's own reload runs (Debian's checks the
 * configuration and keys with "sshd -t" before the SIGHUP: a broken set
 * leaves sshd serving the old keys rather than none). */

/* The units sshd runs as: Debian's and Ubuntu's, then everyone else's
 * (on Debian sshd.service is an alias of ssh.service). */
#define SSHD_UNITS "ssh.service", "sshd.service"

/* Asks systemd (systemctl try-reload-or-restart) to reload the first of
 * SSHD_UNITS that is active.  *ret_what says what became of it, for the
 * record: "reloaded UNIT", "not running" (none active: socket-activated
 * sshd starts anew for each connection, or sshd does not run), or what
 * failed.  Returns 1 when a unit was reloaded, 0 when none runs, -errno
 * when systemctl could not be run or failed. */
int sshd_reload(char **ret_what);
