/*
 * tests/fuzz/replay.c: runs a fuzz target over a corpus without libFuzzer,
 * for make check.  Arguments are corpus directories or single inputs; with
 * none, the corpus is $NM_TOP/tests/fuzz/corpus/<name>, where the program
 * is called replay_<name>.  Each input runs in a child so that a crash is
 * counted and named, and the others still run.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/fuzz/fuzz.h"

#ifndef NM_SRCDIR
#define NM_SRCDIR	"."
#endif

static const char	*replay_name;
static int		 passed, failed;

static int	replay_read(const char *, uint8_t **, size_t *);
static int	replay_run(const uint8_t *, size_t);
static void	replay_file(const char *);
static void	replay_dir(const char *);
static void	replay_path(const char *);

/* Reads a whole file; 0, or -1 with errno set. */
static int
replay_read(const char *path, uint8_t **out, size_t *len)
{
	struct stat	 st;
	uint8_t		*buf = NULL;
	ssize_t		 n;
	size_t		 got = 0;
	int		 fd;

	if ((fd = open(path, O_RDONLY)) == -1)
		return (-1);
	if (fstat(fd, &st) == -1)
		goto fail;
	/* Never a NULL buffer, even for an empty input. */
	buf = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		got += (size_t)n;
	}
	close(fd);
	*out = buf;
	*len = got;
	return (0);
fail:
	free(buf);
	close(fd);
	return (-1);
}

/* Runs the target on one input in a child; 0 when it returned normally. */
static int
replay_run(const uint8_t *data, size_t len)
{
	pid_t	pid;
	int	status;

	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) == -1) {
		perror("fork");
		return (-1);
	}
	if (pid == 0) {
		LLVMFuzzerTestOneInput(data, len);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) == -1) {
		if (errno != EINTR) {
			perror("waitpid");
			return (-1);
		}
	}
	return (WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1);
}

/* Replays one input file and counts it. */
static void
replay_file(const char *path)
{
	uint8_t	*data;
	size_t	 len;

	if (replay_read(path, &data, &len) == -1) {
		printf("FAIL %s: %s\n", path, strerror(errno));
		failed++;
		return;
	}
	if (replay_run(data, len) == 0)
		passed++;
	else {
		printf("FAIL %s: the target crashed\n", path);
		failed++;
	}
	free(data);
}

/* Replays every regular file of a directory, in name order. */
static void
replay_dir(const char *dir)
{
	struct dirent	**ents;
	char		 *path;
	int		  n, i;

	if ((n = scandir(dir, &ents, NULL, alphasort)) == -1) {
		printf("FAIL %s: %s\n", dir, strerror(errno));
		failed++;
		return;
	}
	for (i = 0; i < n; i++) {
		if (ents[i]->d_name[0] != '.') {
			xasprintf(&path, "%s/%s", dir, ents[i]->d_name);
			replay_path(path);
			free(path);
		}
		free(ents[i]);
	}
	free(ents);
}

/* Replays a file, or a directory's files. */
static void
replay_path(const char *path)
{
	struct stat	st;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		replay_dir(path);
	else
		replay_file(path);
}

/* Replays the corpus named by the arguments or the program's name. */
int
main(int argc, char **argv)
{
	const char	*base, *top;
	char		*dir;
	int		 i;

	base = strrchr(argv[0], '/') != NULL ? strrchr(argv[0], '/') + 1 :
	    argv[0];
	replay_name = strncmp(base, "replay_", 7) == 0 ? base + 7 : base;
	if (argc > 1) {
		for (i = 1; i < argc; i++)
			replay_path(argv[i]);
	} else {
		if ((top = getenv("NM_TOP")) == NULL)
			top = NM_SRCDIR;
		xasprintf(&dir, "%s/tests/fuzz/corpus/%s", top, replay_name);
		replay_path(dir);
		free(dir);
	}
	if (passed + failed == 0) {
		printf("FAIL no inputs\n");
		failed++;
	}
	printf("fuzz_%s: %d passed, %d failed\n", replay_name, passed, failed);
	return (failed == 0 ? 0 : 1);
}
