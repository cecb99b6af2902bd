"""Discovery jobs: the spec a job holds, job records in SQL, dispatch to workers."""

