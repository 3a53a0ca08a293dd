//! Jobs with an order to respect, on a few threads: what
//! [`super::Sys::load_modules`] needs to load the initrd's modules at the
//! same time where their dependencies allow. `std` only.

use std::sync::{Condvar, Mutex};

/// Where each job stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
}

/// Run `job(0) .. job(n - 1)` on at most `threads` threads (the calling
/// one included) and return their results in job order. Job `i` starts
/// only once every job in `after(i)` has returned; an entry of `after(i)`
/// that is not below `i` is ignored, so every order given is acyclic and
/// the run always ends. Among the jobs that may start, the lowest-numbered
/// goes first: with one thread the jobs run in order, on the calling
/// thread. When a thread cannot be started the others do its share.
pub fn run_ordered<T, A, F>(n: usize, after: A, threads: usize, job: F) -> Vec<T>
where
    T: Send,
    A: Fn(usize) -> Vec<usize> + Sync,
    F: Fn(usize) -> T + Sync,
{
    let wait_for: Vec<Vec<usize>> = (0..n)
        .map(|i| after(i).into_iter().filter(|&j| j < i).collect())
        .collect();
    let states = Mutex::new(vec![State::Waiting; n]);
    let changed = Condvar::new();
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let work = || loop {
        let mut s = states.lock().unwrap_or_else(|e| e.into_inner());
        let i = loop {
            let ready = (0..n).find(|&i| {
                s.get(i) == Some(&State::Waiting)
                    && wait_for
                        .get(i)
                        .is_some_and(|w| w.iter().all(|&j| s.get(j) == Some(&State::Done)))
            });
            if let Some(i) = ready {
                break i;
            }
            if !s.contains(&State::Waiting) {
                return;
            }
            s = changed.wait(s).unwrap_or_else(|e| e.into_inner());
        };
        if let Some(x) = s.get_mut(i) {
            *x = State::Running;
        }
        drop(s);
        let r = job(i);
        if let Some(x) = results.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            *x = Some(r);
        }
        let mut s = states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = s.get_mut(i) {
            *x = State::Done;
        }
        drop(s);
        changed.notify_all();
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.min(n) {
            if std::thread::Builder::new()
                .spawn_scoped(scope, work)
                .is_err()
            {
                break;
            }
        }
        work();
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// (job, "start"/"end") in the order they happened.
    fn traced(
        n: usize,
        after: &[&[usize]],
        threads: usize,
    ) -> (Vec<usize>, Vec<(usize, &'static str)>) {
        let log = Mutex::new(Vec::new());
        let out = run_ordered(
            n,
            |i| after[i].to_vec(),
            threads,
            |i| {
                log.lock().unwrap().push((i, "start"));
                std::thread::yield_now();
                log.lock().unwrap().push((i, "end"));
                i * 10
            },
        );
        (out, log.into_inner().unwrap())
    }

    #[test]
    fn one_thread_runs_the_jobs_in_order_on_the_caller() {
        let caller = std::thread::current().id();
        let seen = Mutex::new(Vec::new());
        let out = run_ordered(
            4,
            |_| Vec::new(),
            1,
            |i| {
                seen.lock().unwrap().push((i, std::thread::current().id()));
                i
            },
        );
        assert_eq!(out, [0, 1, 2, 3]);
        assert_eq!(
            seen.into_inner().unwrap(),
            (0..4).map(|i| (i, caller)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn no_job_starts_before_the_jobs_it_waits_for_end() {
        // The generic kernel's twelve modules: virtio_blk after virtio and
        // virtio_ring, virtio_pci after the four virtio modules, ext4 after
        // crc32c_*, jbd2, mbcache, crc16.
        let after: [&[usize]; 12] = [
            &[],
            &[],
            &[0, 1],
            &[],
            &[],
            &[0, 1, 3, 4],
            &[],
            &[],
            &[],
            &[],
            &[],
            &[6, 7, 8, 9, 10],
        ];
        for threads in [1, 2, 3, 8] {
            for _ in 0..20 {
                let (out, log) = traced(12, &after, threads);
                assert_eq!(out, (0..12).map(|i| i * 10).collect::<Vec<_>>());
                let at = |i: usize, what: &str| log.iter().position(|e| *e == (i, what)).unwrap();
                for (i, a) in after.iter().enumerate() {
                    for &j in a.iter() {
                        assert!(
                            at(j, "end") < at(i, "start"),
                            "{i} started before {j} ended: {log:?}"
                        );
                    }
                }
                assert_eq!(log.len(), 24);
            }
        }
    }

    #[test]
    fn an_order_pointing_forward_or_at_itself_is_ignored_not_a_hang() {
        let (out, _) = traced(3, &[&[2, 0], &[1, 5], &[0]], 2);
        assert_eq!(out, [0, 10, 20]);
        assert!(run_ordered(0, |_| Vec::new(), 4, |i| i).is_empty());
    }

    #[test]
    fn independent_jobs_run_at_the_same_time_on_two_threads() {
        // Each of the two jobs waits (up to a deadline) until both have
        // started: they can both see it only if they run at once.
        let started = Mutex::new(0);
        let cv = Condvar::new();
        let out = run_ordered(
            2,
            |_| Vec::new(),
            2,
            |_| {
                let mut n = started.lock().unwrap();
                *n += 1;
                cv.notify_all();
                let deadline = Instant::now() + Duration::from_secs(30);
                while *n < 2 && Instant::now() < deadline {
                    n = cv.wait_timeout(n, Duration::from_millis(100)).unwrap().0;
                }
                *n == 2
            },
        );
        assert_eq!(out, [true, true]);
    }
}
