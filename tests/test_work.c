/*
 * tests/test_work.c: the worker pool of work.c: jobs run off the loop and
 * their done callbacks on it, long jobs never take the reserve, groups
 * finish even with no free worker, the thread bound holds, and the drain
 * at shutdown finishes everything that was queued.
 */
#include <sys/time.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "nixmirror.h"

#define NJOBS	200

static int		 npass, nfail;
static pthread_t	 loop_thread;
static struct event_base *base;
static pthread_mutex_t	 mtx = PTHREAD_MUTEX_INITIALIZER;
static int		 ran, done_on_loop, done_off_loop, running, peak;
static int		 release_long;

#define CHECK(c, what) do {						\
	if (c)								\
		npass++;						\
	else {								\
		nfail++;						\
		printf("FAIL line %d: %s\n", __LINE__, what);		\
	}								\
} while (0)

/* Counts a job, and how many run at once. */
static void
job_fn(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mtx);
	ran++;
	if (++running > peak)
		peak = running;
	pthread_mutex_unlock(&mtx);
	usleep(2000);
	pthread_mutex_lock(&mtx);
	running--;
	pthread_mutex_unlock(&mtx);
}

/* Counts where a done callback ran; the last one stops the loop. */
static void
job_done(void *arg)
{
	int	*left = arg;

	if (pthread_equal(pthread_self(), loop_thread))
		done_on_loop++;
	else
		done_off_loop++;
	if (left != NULL && --*left == 0)
		event_base_loopexit(base, NULL);
}

/* A long job that holds its thread until told to let go. */
static void
long_fn(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&mtx);
		if (release_long) {
			pthread_mutex_unlock(&mtx);
			return;
		}
		pthread_mutex_unlock(&mtx);
		usleep(1000);
	}
}

struct group_arg {
	int	*ga_slots;
	int	 ga_i;
};

/* A group job: writes its slot. */
static void
group_fn(void *arg)
{
	struct group_arg	*ga = arg;

	usleep(500);
	ga->ga_slots[ga->ga_i] = ga->ga_i + 1;
}

/* Runs a group of n jobs from the calling thread and checks every slot. */
static int
run_group(int n)
{
	struct work_group	*wg;
	struct group_arg	*ga;
	int			*slots, i, ok = 1;

	slots = xcalloc((size_t)n, sizeof *slots);
	ga = xcalloc((size_t)n, sizeof *ga);
	wg = work_group_new();
	for (i = 0; i < n; i++) {
		ga[i].ga_slots = slots;
		ga[i].ga_i = i;
		work_group_add(wg, group_fn, &ga[i]);
	}
	work_group_wait(wg);
	for (i = 0; i < n; i++)
		if (slots[i] != i + 1)
			ok = 0;
	free(slots);
	free(ga);
	return (ok);
}

static int	 group_in_long_ok;

/* A long job that runs a group inside a worker, as a build does. */
static void
long_group_fn(void *arg)
{
	(void)arg;
	group_in_long_ok = run_group(64);
}

/* Stops the loop after a timeout, so a broken pool fails, not hangs. */
static void
timeout_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	*(int *)arg = 1;
	event_base_loopexit(base, NULL);
}

/* Runs the loop until the jobs are done or 20 s pass; 0 when done. */
static int
run_loop(void)
{
	struct timeval	 tv = { 20, 0 };
	struct event	*ev;
	int		 timedout = 0;

	ev = evtimer_new(base, timeout_cb, &timedout);
	evtimer_add(ev, &tv);
	event_base_dispatch(base);
	event_free(ev);
	return (timedout ? -1 : 0);
}

static void
test_short_jobs(void)
{
	int	 i, left = NJOBS;

	for (i = 0; i < NJOBS; i++)
		CHECK(work_submit(job_fn, job_done, &left) == 0, "submit");
	CHECK(run_loop() == 0, "all short jobs done before the timeout");
	CHECK(ran == NJOBS, "every job ran");
	CHECK(done_on_loop == NJOBS, "every done ran on the loop");
	CHECK(done_off_loop == 0, "no done ran off the loop");
	CHECK(peak <= 8, "at most the pool's threads ran at once");
	CHECK(peak >= 2, "jobs ran in parallel");
}

/* Long jobs fill all but the reserve; a short job still runs. */
static void
test_reserve(void)
{
	int	 i, left = 1, longleft = 8;

	/* 8 threads, 4 reserved: 4 long jobs run, 4 wait. */
	for (i = 0; i < 8; i++)
		CHECK(work_submit_long(long_fn, job_done, &longleft) == 0,
		    "submit long");
	usleep(50000);
	done_on_loop = 0;
	ran = 0;
	CHECK(work_submit(job_fn, job_done, &left) == 0, "submit short");
	CHECK(run_loop() == 0, "a short job runs while long jobs hold "
	    "threads");
	CHECK(ran == 1, "the short job ran");
	pthread_mutex_lock(&mtx);
	release_long = 1;
	pthread_mutex_unlock(&mtx);
	CHECK(run_loop() == 0, "the long jobs finish");
	CHECK(longleft == 0, "every long job's done ran");
}

/* A group inside a long job, and one from the loop thread itself. */
static void
test_groups(void)
{
	int	 left = 1;

	CHECK(run_group(100), "a group from the main thread");
	CHECK(work_submit_long(long_group_fn, job_done, &left) == 0,
	    "submit a long job that runs a group");
	CHECK(run_loop() == 0, "the long job's group finished");
	CHECK(group_in_long_ok, "a group inside a worker gives every result");
}

/* The drain finishes queued jobs and runs their done callbacks. */
static void
test_drain(void)
{
	int	 i, left = 50;

	ran = 0;
	done_on_loop = done_off_loop = 0;
	for (i = 0; i < 50; i++)
		work_submit(job_fn, job_done, &left);
	work_drain();
	CHECK(ran == 50, "the drain ran every queued job");
	CHECK(left == 0, "the drain ran every done callback");
	CHECK(work_submit(job_fn, job_done, &left) == -1,
	    "no job is taken after the drain");
}

int
main(void)
{
	char	*cause = NULL;

	log_init(0);
	if (evthread_use_pthreads() == -1 || (base = event_base_new()) == NULL)
		fatalx("libevent");
	loop_thread = pthread_self();
	CHECK(work_submit(job_fn, NULL, NULL) == -1,
	    "no job is taken before work_init");
	if (work_init(base, 8, &cause) == -1)
		fatalx("work_init: %s", cause);
	CHECK(work_cpus() >= 1, "at least one cpu");
	test_short_jobs();
	test_reserve();
	test_groups();
	test_drain();
	event_base_free(base);
	printf("%d passed, %d failed\n", npass, nfail);
	return (nfail == 0 ? 0 : 1);
}
