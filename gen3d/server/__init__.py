"""`gen3d serve`: the web viewer and its job server.

Layout of the package, one job per module:
- `runs.py`     reads run folders (manifest, events) and resolves the files a run may serve;
- `jobqueue.py` the SQLite job queue in RUNS_DIR/queue.sqlite3, shared by the server and its workers;
- `jobkinds.py` the job kinds the server accepts, their option checks and their `gen3d` command lines;
- `uploads.py`  size-capped image uploads, checked with Pillow;
- `guards.py`   who may ask: the Host allow-list, the API token, same-origin writes, the body size cap;
- `submissions.py` reads a job submission, refusing malformed or hostile bodies with a 4xx;
- `stream.py`   server-sent progress events, tailing events.jsonl and the job/manifest status;
- `app.py`      the FastAPI application (JSON API + the built viewer under `static/`);
- `worker.py`   a worker process: claims jobs and runs `python -m gen3d.cli <kind> ...` for each;
- `launcher.py` what `gen3d serve` does: lock RUNS_DIR, recover the queue, start workers and uvicorn;
"""
