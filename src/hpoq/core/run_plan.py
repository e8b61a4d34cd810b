"""What a submission does to a backbone's latest variant: the run-mode table.

mode                  no variant yet    latest incomplete              latest complete
reuse_if_exists       create variant 1  continue if auto_resume,       use it as is
                                        else use it as is
resume_if_incomplete  create variant 1  continue it                    use it as is
force_new             create variant 1  allocate the next variant      allocate the next
"""

from __future__ import annotations

from enum import StrEnum

from hpoq.config.base import RunMode


class Action(StrEnum):
    CREATED = "created"  # a new variant (1, or the next number)
    CONTINUED = "continued"  # the latest variant, topped up to n_trials
    REUSED = "reused"  # the latest variant as it is; nothing enqueued


def decide(mode: RunMode, *, has_variant: bool, complete: bool, auto_resume: bool) -> Action:
    if not has_variant or mode is RunMode.FORCE_NEW:
        return Action.CREATED
    if complete:
        return Action.REUSED
    if mode is RunMode.RESUME_IF_INCOMPLETE or auto_resume:
        return Action.CONTINUED
    return Action.REUSED
