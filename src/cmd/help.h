/*
 * cmd/help: the help texts of the command line, one table for `--help`
 * and for the usage line of a mistake.  Static strings; owns nothing.
 */
#ifndef MAILHOP_CMD_HELP_H
#define MAILHOP_CMD_HELP_H

#include <stddef.h>

/* `mailhop CMD --help`: CMD's text; the command list for NULL or a name
 * that is no command. */
const char *help_text(const char *cmd);

/* The first line of that text ("usage: mailhop status [-s SOCKET]
 * [--json]") into out (cap bytes, always terminated). */
void help_usage_line(const char *cmd, char *out, size_t cap);

#endif
