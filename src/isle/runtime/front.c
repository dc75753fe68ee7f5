/* isle-runtime's front (built by isle/runtime/launcher.py; see there): `start` without an
 * interpreter, every other verb handed to the Python runtime by execv.
 *
 * `isle-runtime [--root DIR] [--log FILE] [--log-format F] start ID` is the one call per
 * container that only reads the exec fifo (the init blocks opening it for writing until a
 * reader opens it, then writes a byte and execs the process). When create left
 * <root>/<id>/start.plan ("PID STARTTIME POSTSTART\n", written once the container is
 * "created"), the init is the process it names (pid and start time), the fifo is there and no
 * poststart hook is to run, this reads the byte and removes the fifo, as the Python start does.
 * Anything else (another flag or verb, no plan, hooks, a dead init, a failure) goes to Python,
 * which then says what is wrong as it always does. Before the byte is read nothing has changed,
 * so handing over is always safe. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef PYTHON
#error "PYTHON (the interpreter) must be defined"
#endif
#ifndef SCRIPT
#error "SCRIPT (the Python launcher) must be defined"
#endif

static int valid_id(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 1024 || !strcmp(s, ".") || !strcmp(s, ".."))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("._-+", *s)))
			return 0;
	return 1;
}

/* the start time (ticks since boot, field 22) of a live, non-zombie pid, or 0 */
static unsigned long long starttime(long pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return 0;
	p += 2; /* at the state: field 3; the start time is 19 fields on */
	for (int i = 0; i < 19; i++) {
		p = strchr(p, ' ');
		if (!p)
			return 0;
		p++;
	}
	return strtoull(p, NULL, 10);
}

/* 0: started; -1: not done here (nothing changed), Python decides */
static int fast_start(const char *root, const char *id)
{
	int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return -1;
	int cd = openat(dir, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	close(dir);
	if (cd < 0)
		return -1;
	int rc = -1, pf = openat(cd, "start.plan", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	char plan[128];
	ssize_t n = pf < 0 ? -1 : read(pf, plan, sizeof(plan) - 1);
	if (pf >= 0)
		close(pf);
	long pid = 0;
	unsigned long long st = 0;
	int hooks = 1;
	if (n > 0) {
		plan[n] = 0;
		if (sscanf(plan, "%ld %llu %d", &pid, &st, &hooks) != 3)
			pid = 0;
	}
	struct stat sb;
	if (pid <= 0 || hooks || starttime(pid) != st ||
	    fstatat(cd, "exec.fifo", &sb, AT_SYMLINK_NOFOLLOW) || !S_ISFIFO(sb.st_mode))
		goto out;
	int fifo = openat(cd, "exec.fifo", O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	if (fifo < 0)
		goto out;
	struct pollfd p = {.fd = fifo, .events = POLLIN};
	for (;;) {
		int r = poll(&p, 1, 100);
		if (r < 0 && errno != EINTR)
			break;
		if (r > 0) {
			char c;
			ssize_t got = read(fifo, &c, 1);
			if (got == 1) {
				rc = 0;
				break;
			}
			if (got == 0) /* no writer (yet, or any more): wait on it by polling again */
				usleep(1000);
			else if (errno != EAGAIN && errno != EINTR)
				break;
		}
		if (starttime(pid) != st)
			break; /* the init died: Python says so */
	}
	close(fifo);
	if (rc == 0)
		unlinkat(cd, "exec.fifo", 0); /* "created" no more (state.py: status) */
out:
	close(cd);
	return rc;
}

int main(int argc, char **argv)
{
	const char *root = "/run/isle-runtime";
	int i = 1;
	while (i < argc && argv[i][0] == '-') {
		const char *a = argv[i];
		if ((!strcmp(a, "--root") || !strcmp(a, "--log")) && i + 1 < argc) {
			if (!strcmp(a, "--root"))
				root = argv[i + 1];
			i += 2;
		} else if (!strcmp(a, "--log-format") && i + 1 < argc &&
			   (!strcmp(argv[i + 1], "json") || !strcmp(argv[i + 1], "text"))) {
			i += 2;
		} else if (!strncmp(a, "--root=", 7)) {
			root = a + 7;
			i++;
		} else if (!strncmp(a, "--log=", 6) || !strcmp(a, "--log-format=json") ||
			   !strcmp(a, "--log-format=text")) {
			i++;
		} else {
			i = argc; /* a flag only Python knows */
		}
	}
	if (i + 2 == argc && !strcmp(argv[i], "start") && valid_id(argv[i + 1]) &&
	    !getenv("ISLE_RUNTIME_TRACE") && fast_start(root, argv[i + 1]) == 0)
		return 0;
	char **args = calloc((size_t)argc + 3, sizeof(char *));
	if (!args)
		return 1;
	args[0] = PYTHON;
	args[1] = "-SE";
	args[2] = SCRIPT;
	for (int j = 1; j < argc; j++)
		args[j + 2] = argv[j];
	execv(PYTHON, args);
	fprintf(stderr, "isle-runtime: cannot run %s: %s\n", PYTHON, strerror(errno));
	return 1;
}
