/*
 * work.c: the one pool of worker threads.  Everything slow that must stay
 * off the event loop goes through here: Nix builds, blob and manifest
 * commits (fsync, rename, SQLite), garbage collection, and the blocks of
 * parallel layer compression.
 *
 *   loop thread                    worker threads
 *   work_submit(fn, done, arg) --> queue --> fn(arg)
 *        done(arg, 0) <-- completed list <--'   (one event wakes the loop)
 *
 * There are at most WORK_MAX_THREADS threads, started on demand and kept.
 * Long jobs (builds, gc) may hold all but WORK_RESERVE of them, so short
 * jobs (commits) always find a thread.  A job of a group (work_group_add)
 * is CPU work that its owner waits for; the owner runs queued jobs of its
 * group itself while it waits, so a group never deadlocks the pool, and
 * idle workers help while fewer than work_ncpu group jobs run.
 *
 * work_drain() at shutdown refuses new jobs, waits for every queued and
 * running job, joins the threads and runs the remaining done callbacks,
 * so no thread outlives the event base.  A job that cannot be started is
 * an error for its caller (-1), never a fatal.
 */
#include <sys/queue.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "nixmirror.h"

#define WORK_MAX_THREADS	72	/* 64 builds and the reserve */
#define WORK_RESERVE		4	/* threads long jobs never take */

enum work_kind {
	WORK_SHORT,		/* a commit: seconds at most */
	WORK_LONG,		/* a build or a gc: minutes */
	WORK_GROUP,		/* CPU work of a group, waited for */
};

struct work_job {
	enum work_kind		 wj_kind;
	work_fn			 wj_fn;
	work_done_fn		 wj_done;
	void			*wj_arg;
	struct work_group	*wj_group;
	TAILQ_ENTRY(work_job)	 wj_entry;
};
TAILQ_HEAD(work_jobs, work_job);

struct work_group {
	size_t			 wg_pending;	/* added, not yet finished */
	pthread_cond_t		 wg_cond;
};

static pthread_mutex_t	 work_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 work_cond = PTHREAD_COND_INITIALIZER;
static struct work_jobs	 work_queue = TAILQ_HEAD_INITIALIZER(work_queue);
static struct work_jobs	 work_completed =
			    TAILQ_HEAD_INITIALIZER(work_completed);
static pthread_t	 work_threads[WORK_MAX_THREADS];
static int		 work_nthreads;
static int		 work_idle;
static int		 work_nlong;	/* long jobs running */
static int		 work_ngroup;	/* group jobs run by idle workers */
static int		 work_ncpu = 1;
static int		 work_max = WORK_MAX_THREADS;
static int		 work_stopping;
static int		 work_ready;
static struct event	*work_done_ev;

static void	*work_thread(void *);
static void	 work_done_cb(evutil_socket_t, short, void *);

/* Sets up the pool for an event loop; 0, or -1 with *cause. */
int
work_init(struct event_base *base, int max_threads, char **cause)
{
	long	 n;

	if ((work_done_ev = event_new(base, -1, 0, work_done_cb,
	    NULL)) == NULL) {
		xasprintf(cause, "work: cannot create the completion event");
		return (-1);
	}
	n = sysconf(_SC_NPROCESSORS_ONLN);
	work_ncpu = n > 0 ? (int)n : 1;
	if (max_threads > 0 && max_threads < WORK_MAX_THREADS)
		work_max = max_threads;
	else
		work_max = WORK_MAX_THREADS;
	work_stopping = 0;
	work_ready = 1;
	return (0);
}

/* Whether jobs can be submitted: the pool is set up and not draining. */
int
work_available(void)
{
	int	 rv;

	pthread_mutex_lock(&work_mtx);
	rv = work_ready && !work_stopping;
	pthread_mutex_unlock(&work_mtx);
	return (rv);
}

/* How many jobs may run at once on the CPU (the machine's cores). */
int
work_cpus(void)
{
	return (work_ncpu);
}

/*
 * The next job an idle worker may run, or NULL; work_mtx held.  Long
 * jobs leave WORK_RESERVE threads free, group jobs keep to work_ncpu.
 */
static struct work_job *
work_next(void)
{
	struct work_job	*wj;

	TAILQ_FOREACH(wj, &work_queue, wj_entry) {
		if (wj->wj_kind == WORK_LONG &&
		    work_nlong >= work_max - WORK_RESERVE)
			continue;
		if (wj->wj_kind == WORK_GROUP && work_ngroup >= work_ncpu)
			continue;
		TAILQ_REMOVE(&work_queue, wj, wj_entry);
		return (wj);
	}
	return (NULL);
}

/* Runs one job outside the lock, then hands it on; work_mtx held. */
static void
work_run(struct work_job *wj)
{
	pthread_mutex_unlock(&work_mtx);
	wj->wj_fn(wj->wj_arg);
	pthread_mutex_lock(&work_mtx);
	/* Draining: workers waiting for the queue to empty look again. */
	if (work_stopping)
		pthread_cond_broadcast(&work_cond);
	if (wj->wj_group != NULL) {
		if (--wj->wj_group->wg_pending == 0)
			pthread_cond_broadcast(&wj->wj_group->wg_cond);
		free(wj);
		return;
	}
	if (wj->wj_done == NULL) {
		free(wj);
		return;
	}
	TAILQ_INSERT_TAIL(&work_completed, wj, wj_entry);
	if (work_done_ev != NULL)
		event_active(work_done_ev, EV_READ, 0);
}

/* A worker: runs jobs until the pool drains. */
static void *
work_thread(void *arg)
{
	struct work_job	*wj;
	enum work_kind	 kind;

	(void)arg;
	pthread_mutex_lock(&work_mtx);
	for (;;) {
		if ((wj = work_next()) == NULL) {
			if (work_stopping && TAILQ_EMPTY(&work_queue))
				break;
			work_idle++;
			pthread_cond_wait(&work_cond, &work_mtx);
			work_idle--;
			continue;
		}
		kind = wj->wj_kind;
		if (kind == WORK_LONG)
			work_nlong++;
		else if (kind == WORK_GROUP)
			work_ngroup++;
		work_run(wj);
		if (kind == WORK_LONG)
			work_nlong--;
		else if (kind == WORK_GROUP)
			work_ngroup--;
		/* A slot for a long or group job may have opened. */
		if (kind != WORK_SHORT && !TAILQ_EMPTY(&work_queue))
			pthread_cond_signal(&work_cond);
	}
	pthread_mutex_unlock(&work_mtx);
	return (NULL);
}

/*
 * Queues a job and makes sure a thread will take it: an idle one, or a
 * new one while there is room.  work_mtx held; 0, or -1 when no thread
 * can run it (none could be started at all).
 */
static int
work_enqueue(struct work_job *wj)
{
	if (work_stopping || !work_ready)
		return (-1);
	TAILQ_INSERT_TAIL(&work_queue, wj, wj_entry);
	if (work_idle > 0) {
		pthread_cond_signal(&work_cond);
		return (0);
	}
	if (work_nthreads < work_max && pthread_create(
	    &work_threads[work_nthreads], NULL, work_thread, NULL) == 0) {
		work_nthreads++;
		return (0);
	}
	if (work_nthreads > 0)
		return (0);	/* it waits for a busy thread */
	TAILQ_REMOVE(&work_queue, wj, wj_entry);
	return (-1);
}

/* Queues fn(arg) of a kind; done(arg) runs later on the loop. */
static int
work_submit_kind(enum work_kind kind, work_fn fn, work_done_fn done,
    void *arg)
{
	struct work_job	*wj;
	int		 rv;

	wj = xcalloc(1, sizeof *wj);
	wj->wj_kind = kind;
	wj->wj_fn = fn;
	wj->wj_done = done;
	wj->wj_arg = arg;
	pthread_mutex_lock(&work_mtx);
	rv = work_enqueue(wj);
	pthread_mutex_unlock(&work_mtx);
	if (rv == -1) {
		log_warnx("work: cannot start a job (%s)", work_stopping ?
		    "shutting down" : "no worker thread");
		free(wj);
	}
	return (rv);
}

/* A short job (a commit); see nixmirror.h. */
int
work_submit(work_fn fn, work_done_fn done, void *arg)
{
	return (work_submit_kind(WORK_SHORT, fn, done, arg));
}

/* A long job (a build, a gc); see nixmirror.h. */
int
work_submit_long(work_fn fn, work_done_fn done, void *arg)
{
	return (work_submit_kind(WORK_LONG, fn, done, arg));
}

/* Runs the done callbacks of finished jobs, on the loop. */
static void
work_done_cb(evutil_socket_t fd, short events, void *arg)
{
	struct work_jobs	 list;
	struct work_job		*wj;

	(void)fd;
	(void)events;
	(void)arg;
	TAILQ_INIT(&list);
	pthread_mutex_lock(&work_mtx);
	TAILQ_CONCAT(&list, &work_completed, wj_entry);
	pthread_mutex_unlock(&work_mtx);
	while ((wj = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, wj, wj_entry);
		wj->wj_done(wj->wj_arg);
		free(wj);
	}
}

/* A new group of CPU jobs for the calling thread to wait on. */
struct work_group *
work_group_new(void)
{
	struct work_group	*wg;

	wg = xcalloc(1, sizeof *wg);
	if (pthread_cond_init(&wg->wg_cond, NULL) != 0)
		fatalx("%s: pthread_cond_init failed", __func__);
	return (wg);
}

/*
 * Adds fn(arg) to a group.  It never fails: when no worker can take it,
 * the owner runs it in work_group_wait.
 */
void
work_group_add(struct work_group *wg, work_fn fn, void *arg)
{
	struct work_job	*wj;

	wj = xcalloc(1, sizeof *wj);
	wj->wj_kind = WORK_GROUP;
	wj->wj_fn = fn;
	wj->wj_arg = arg;
	wj->wj_group = wg;
	pthread_mutex_lock(&work_mtx);
	wg->wg_pending++;
	TAILQ_INSERT_TAIL(&work_queue, wj, wj_entry);
	if (work_idle > 0)
		pthread_cond_signal(&work_cond);
	else if (work_ready && !work_stopping &&
	    work_nthreads < work_max && work_nthreads < work_ncpu + 1 &&
	    pthread_create(&work_threads[work_nthreads], NULL, work_thread,
	    NULL) == 0)
		work_nthreads++;
	pthread_mutex_unlock(&work_mtx);
}

/*
 * Waits until every job of the group has finished, running the group's
 * queued jobs in this thread meanwhile; then frees the group.
 */
void
work_group_wait(struct work_group *wg)
{
	struct work_job	*wj;

	pthread_mutex_lock(&work_mtx);
	while (wg->wg_pending > 0) {
		TAILQ_FOREACH(wj, &work_queue, wj_entry)
			if (wj->wj_group == wg)
				break;
		if (wj != NULL) {
			TAILQ_REMOVE(&work_queue, wj, wj_entry);
			work_run(wj);
		} else
			pthread_cond_wait(&wg->wg_cond, &work_mtx);
	}
	pthread_mutex_unlock(&work_mtx);
	pthread_cond_destroy(&wg->wg_cond);
	free(wg);
}

/*
 * Shutdown: refuses new jobs, lets every queued and running one finish,
 * joins the threads, then runs the done callbacks still due (the loop has
 * stopped, so they run here) and frees the completion event.
 */
void
work_drain(void)
{
	int	 i, n;

	pthread_mutex_lock(&work_mtx);
	work_stopping = 1;
	pthread_cond_broadcast(&work_cond);
	n = work_nthreads;
	pthread_mutex_unlock(&work_mtx);
	for (i = 0; i < n; i++)
		pthread_join(work_threads[i], NULL);
	pthread_mutex_lock(&work_mtx);
	work_nthreads = 0;
	work_ready = 0;
	pthread_mutex_unlock(&work_mtx);
	work_done_cb(-1, 0, NULL);
	if (work_done_ev != NULL)
		event_free(work_done_ev);
	work_done_ev = NULL;
}
