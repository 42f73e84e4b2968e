//! Runs a dependency graph of tasks (the stages of a build) on a bounded number of threads.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, OnceLock};

/// The results of finished tasks, readable by the tasks that depend on them.
pub struct Finished<T> {
    results: Vec<OnceLock<T>>,
}

impl<T> Finished<T> {
    /// The result of task `index`; `None` until it has finished. A task's declared dependencies
    /// have always finished before it starts.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.results.get(index).and_then(OnceLock::get)
    }
}

struct Queue {
    /// For each task, how many of its dependencies have not finished yet.
    waiting_on: Vec<usize>,
    /// Tasks whose dependencies all finished; the lowest index starts first, keeping the order
    /// close to the Dockerfile's.
    ready: BTreeSet<usize>,
    running: usize,
    remaining: usize,
    failed: bool,
}

/// Runs every task of the graph once, each only after all of its dependencies finished, with at
/// most `jobs` tasks at a time. `deps[i]` lists the tasks task `i` needs. Returns every result in
/// task order, or the first error; after an error no further task starts, and the ones already
/// running are waited for. A dependency outside the graph or a cycle is reported as
/// [`GraphError`] before anything runs.
pub fn run_graph<T, E, F>(deps: &[Vec<usize>], jobs: usize, run: F) -> Result<Vec<T>, E>
where
    T: Send + Sync,
    E: Send + From<GraphError>,
    F: Fn(usize, &Finished<T>) -> Result<T, E> + Sync,
{
    let n = deps.len();
    check_acyclic(deps)?;
    let mut dependents = vec![Vec::new(); n];
    for (task, task_deps) in deps.iter().enumerate() {
        for &d in task_deps {
            dependents[d].push(task);
        }
    }
    let waiting_on: Vec<usize> = deps.iter().map(Vec::len).collect();
    let ready = (0..n).filter(|&i| waiting_on[i] == 0).collect();
    let queue = Mutex::new(Queue {
        waiting_on,
        ready,
        running: 0,
        remaining: n,
        failed: false,
    });
    let wake = Condvar::new();
    let finished = Finished {
        results: (0..n).map(|_| OnceLock::new()).collect(),
    };
    let first_error: Mutex<Option<E>> = Mutex::new(None);

    let worker = || {
        loop {
            let task = {
                let Ok(mut q) = queue.lock() else { return };
                loop {
                    if q.failed || q.remaining == 0 {
                        return;
                    }
                    if let Some(t) = q.ready.pop_first() {
                        q.running += 1;
                        break t;
                    }
                    if q.running == 0 {
                        // Nothing ready, nothing running, work left: cannot happen on an acyclic
                        // graph; stop rather than wait forever.
                        return;
                    }
                    q = match wake.wait(q) {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                }
            };
            let outcome = run(task, &finished);
            let Ok(mut q) = queue.lock() else { return };
            q.running -= 1;
            match outcome {
                Ok(value) => {
                    let _ = finished.results[task].set(value);
                    q.remaining -= 1;
                    for &t in &dependents[task] {
                        q.waiting_on[t] -= 1;
                        if q.waiting_on[t] == 0 {
                            q.ready.insert(t);
                        }
                    }
                }
                Err(e) => {
                    q.failed = true;
                    if let Ok(mut slot) = first_error.lock()
                        && slot.is_none()
                    {
                        *slot = Some(e);
                    }
                }
            }
            wake.notify_all();
        }
    };

    let threads = jobs.clamp(1, n.max(1));
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });

    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut out = Vec::with_capacity(n);
    for (i, slot) in finished.results.into_iter().enumerate() {
        match slot.into_inner() {
            Some(v) => out.push(v),
            None => return Err(GraphError::NotRun(i).into()),
        }
    }
    Ok(out)
}

/// A task graph that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A task names a dependency that is not in the graph.
    #[error("task {task} depends on task {dependency}, which does not exist")]
    UnknownDependency {
        /// The task.
        task: usize,
        /// The missing dependency.
        dependency: usize,
    },
    /// The tasks depend on each other in a circle.
    #[error("tasks depend on each other in a cycle through task {0}")]
    Cycle(usize),
    /// A task was never run (a worker thread died).
    #[error("task {0} did not run")]
    NotRun(usize),
}

fn check_acyclic(deps: &[Vec<usize>]) -> Result<(), GraphError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    let mut marks = vec![Mark::New; deps.len()];
    for start in 0..deps.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (task, next dependency to look at).
        let mut stack = vec![(start, 0usize)];
        marks[start] = Mark::Visiting;
        while let Some(&mut (task, ref mut next)) = stack.last_mut() {
            if let Some(&d) = deps[task].get(*next) {
                *next += 1;
                match marks.get(d) {
                    None => {
                        return Err(GraphError::UnknownDependency {
                            task,
                            dependency: d,
                        });
                    }
                    Some(Mark::Visiting) => return Err(GraphError::Cycle(d)),
                    Some(Mark::Done) => {}
                    Some(Mark::New) => {
                        marks[d] = Mark::Visiting;
                        stack.push((d, 0));
                    }
                }
            } else {
                marks[task] = Mark::Done;
                stack.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Graph(GraphError),
        Task(usize),
    }
    impl From<GraphError> for TestError {
        fn from(e: GraphError) -> Self {
            TestError::Graph(e)
        }
    }

    #[test]
    fn dependencies_finish_before_dependents_and_results_flow() {
        // 3 needs 1 and 2, which need 0.
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let out = run_graph(&deps, 2, |i, done: &Finished<usize>| {
            let mut from_deps = 0;
            for &d in &deps[i] {
                from_deps += *done.get(d).ok_or(TestError::Task(i))?;
            }
            Ok::<_, TestError>(from_deps + 1)
        });
        assert_eq!(out, Ok(vec![1, 2, 2, 5]));
    }

    #[test]
    fn independent_tasks_run_at_the_same_time_up_to_jobs() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let deps = vec![vec![]; 6];
        let out = run_graph(&deps, 3, |i, _: &Finished<usize>| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, TestError>(i)
        });
        assert_eq!(out, Ok((0..6).collect()));
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn an_error_stops_dependents_from_starting() {
        let started = AtomicUsize::new(0);
        let deps = vec![vec![], vec![0], vec![1]];
        let out = run_graph(&deps, 1, |i, _: &Finished<()>| {
            started.fetch_add(1, Ordering::SeqCst);
            if i == 1 {
                Err(TestError::Task(1))
            } else {
                Ok(())
            }
        });
        assert_eq!(out, Err(TestError::Task(1)));
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cycles_and_unknown_dependencies_are_refused_before_running() {
        let ran = AtomicUsize::new(0);
        let f = |_: usize, _: &Finished<()>| {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TestError>(())
        };
        assert_eq!(
            run_graph(&[vec![1], vec![0]], 2, f),
            Err(TestError::Graph(GraphError::Cycle(0)))
        );
        assert_eq!(
            run_graph(&[vec![5]], 2, f),
            Err(TestError::Graph(GraphError::UnknownDependency {
                task: 0,
                dependency: 5
            }))
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_empty_graph_gives_no_results() {
        let out = run_graph(&[], 4, |_, _: &Finished<()>| Ok::<_, TestError>(()));
        assert_eq!(out, Ok(vec![]));
    }
}
