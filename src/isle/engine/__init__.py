"""isle.engine: containers and volumes as user-facing objects. The API and CLI call only this:

    from isle.config import Settings
    from isle.engine.engine import Engine
    from isle.engine.options import RunOptions, parse_volume, parse_bytes, ...  (flag parsers)

    eng = Engine(Settings(root=..., runroot=...))
    eng.create(RunOptions(image="busybox", command=["sleep", "9"], name="web")) -> CreateReport
    eng.start(ref) / eng.run(opts, stdin_fd=, stdout_fd=, stderr_fd=) -> RunReport(exit_code)
    eng.stop(ref, timeout) / kill(ref, sig) / restart / pause / unpause / rename(ref, new)
    eng.rm(ref, force=, volumes=) / container_prune() / wait(ref) -> exit code
    eng.get(ref) -> ContainerRecord (state re-derived) / list(all=) / ps(all=, filters=) rows
    eng.inspect(ref) -> Docker-shaped dict / logs(ref, follow=, tail=, since=) -> (stream, bytes)
    eng.exec(ref, argv, tty=, env=, user=, workdir=, detach=) -> exit code / exec_capture
    eng.top / stats / cp(src, dst) / diff / commit / export(ref, fileobj) / port / events
    eng.volumes.create/list/inspect, volume_rm, volume_prune / system_df / system_prune / info
VMs (engine/vms.py): vms = VMs(settings); vms.create(name, disk=..) / create_from_image(name, ref)
    / start / stop(name, timeout) / rm(name, force=) / ls / inspect / console(name) -> socket path;
    vms.template_create(eng, image, memory_mib=, vcpus=, network=) / templates() / template_rm(ref)
    / prune_templates() / prune_disks(); `--isolation vm` runs use a matching template by
    themselves.
Errors are isle.errors classes (+ reports.CommandNotFound 127, CannotInvoke 126).

Inside, Engine is a composition root (engine.py): a Context (context.py) shared by the
Supervisor (supervisor.py: start, refresh, signal, release) and the verbs that use it:
Containers (containers.py), Queries (queries.py), Transfer (transfer.py). docs/design.md,
"Engine shape".
"""
