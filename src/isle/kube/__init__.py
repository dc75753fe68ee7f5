"""isle on a Kubernetes node: containerd's CRI with isle's runtimes as runtime handlers.

- ``config``: containerd's config.toml and the CNI conflist for a node (pure data -> text);
- ``pause``: the pod sandbox image, a static pause binary from isle's own C source, as an OCI
  archive that ``ctr images import`` takes (no registry);
- ``node``: a private containerd (``isle kube up/down --dir DIR``) for trying and testing.

isle grows no orchestrator: Kubernetes schedules, containerd's runc shim drives isle-runtime and
isle-vm-runtime as it drives runc (RuntimeClass handlers ``isle`` and ``isle-vm``).
"""
