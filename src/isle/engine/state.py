"""A container's state and what each state allows (youki's ContainerStatus, with can_* guards),
and the restart policy as a pure decision.

    st = State(rec.state)
    if not st.can_pause():
        raise InvalidState(...)

A StrEnum: the record's column holds the value as is, and ``State.RUNNING == "running"``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["State", "should_restart", "restart_delay"]


class State(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    EXITED = "exited"
    DEAD = "dead"

    @classmethod
    def of(cls, value: str) -> State:
        """The record's value; one this version does not know (a newer isle's) counts as dead:
        nothing runs for it, it can be removed or started again."""
        try:
            return cls(value)
        except ValueError:
            return cls.DEAD

    def is_live(self) -> bool:
        """A process exists for it (running or frozen)."""
        return self in (State.RUNNING, State.PAUSED)

    def can_start(self) -> bool:
        return self in (State.CREATED, State.EXITED, State.DEAD)

    def can_stop(self) -> bool:
        return self.is_live()

    def can_kill(self) -> bool:
        return self.is_live()

    def can_pause(self) -> bool:
        return self is State.RUNNING

    def can_unpause(self) -> bool:
        return self is State.PAUSED

    def can_exec(self) -> bool:
        return self is State.RUNNING

    def can_remove(self, force: bool = False) -> bool:
        return force or not self.is_live()

    def can_prune(self) -> bool:
        return self in (State.EXITED, State.CREATED, State.DEAD)


def should_restart(policy: str, max_retries: int, *, exit_code: int, restart_count: int,
                   stopped_by_user: bool) -> bool:
    """Docker's restart policies: no | on-failure[:N] | always | unless-stopped. A container the
    user stopped never restarts; on-failure only after a non-zero exit, at most N times (0: no
    limit)."""
    if stopped_by_user or policy == "no":
        return False
    if policy == "on-failure":
        return exit_code != 0 and (max_retries == 0 or restart_count < max_retries)
    return True


def restart_delay(restart_count: int) -> float:
    """Seconds before the next restart: 0.1 s doubling per restart, at most 10 s."""
    return float(min(0.1 * (2 ** restart_count), 10.0))
