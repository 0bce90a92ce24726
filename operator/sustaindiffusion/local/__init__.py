"""Running a search on one machine without Kubernetes, and reading its results: the `sustaindiffusion`
command. Same spec, engine and worker as the cluster path; never imports the ML stack (workers run
as their own processes)."""
