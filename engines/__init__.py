"""Running a function over data: worker pool, chunking, result assembly, jobs."""
