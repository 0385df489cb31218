# gunicorn -c gunicorn.conf.py "app:create_app()"
# The app is loaded once in the master (preload) and the workers fork from it: the memory-mapped
# model is shared, and persona's service and event store are fork-safe (each worker gets its own
# cache, watcher, queue and writer).
bind = "127.0.0.1:8000"
workers = 4
threads = 8
preload_app = True


def post_fork(server, worker):
    from persona.serving import limit_threads

    limit_threads(1)  # one request per thread: BLAS spreading over every core would fight the other workers
