"""isle.runtime: ``isle-runtime``, isle's runc-compatible OCI runtime (and the VM runtime in vm/).

Drive it like runc (``isle-runtime [--root DIR] create|start|state|kill|delete|run|exec ...``),
or from Python with the same verbs::

    from isle.runtime.container import Options, create, start, kill, delete, run
    create(root, "c1", Options(bundle="/path/to/bundle"))   # init waits on exec.fifo
    start(root, "c1"); kill(root, "c1", 9); delete(root, "c1", force=True)
    code = run(root, "c2", Options(bundle=b), detach=False)  # the container's exit code

Modules: cli (flags, exit codes), container (lifecycle), init (the forked side), rootfs/process
(setup steps), plan (pure planning), state (state.json, status), hooks, cgroup (door to
isle.cgroups), seccomp (filters), demo (``run_demo()`` for the quick start).
Nothing here is imported at package import time: the runtime's start-up is timed against runc.
"""
