"""A container's state and what each state allows (youki's ContainerStatus, with can_* guards),
and the restart policy as a pure decision.

    st = State.of(rec.state)
    if not st.can_pause():
        raise InvalidState(...)

State is a str (the record's column holds it as is: ``State.RUNNING == "running"``) with the
members as class constants, an enum without the ``enum`` module: that import (~1.3 ms) is on no
other part of `isle run --rm`'s path (docs/startup.md).
"""

from __future__ import annotations

__all__ = ["State", "MEMBERS", "should_restart", "restart_delay"]


class State(str):
    __slots__ = ()

    CREATED: State
    RUNNING: State
    PAUSED: State
    EXITED: State
    DEAD: State

    @classmethod
    def of(cls, value: str) -> State:
        """The record's value; one this version does not know (a newer isle's) counts as dead:
        nothing runs for it, it can be removed or started again."""
        return _MEMBERS.get(value, State.DEAD)

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
        return self == State.RUNNING

    def can_unpause(self) -> bool:
        return self == State.PAUSED

    def can_exec(self) -> bool:
        return self == State.RUNNING

    def can_remove(self, force: bool = False) -> bool:
        return force or not self.is_live()

    def can_prune(self) -> bool:
        return self in (State.EXITED, State.CREATED, State.DEAD)


State.CREATED, State.RUNNING, State.PAUSED, State.EXITED, State.DEAD = (
    State("created"), State("running"), State("paused"), State("exited"), State("dead"))
#: every state, in lifecycle order
MEMBERS: tuple[State, ...] = (State.CREATED, State.RUNNING, State.PAUSED, State.EXITED, State.DEAD)
_MEMBERS = {str(m): m for m in MEMBERS}


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
