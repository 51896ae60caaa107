"""The CLI's task names and the downstream task table describe the same tasks."""

from __future__ import annotations

from cmcgns_cli.downstream.tasks import CLS_TASKS, DENSE_TASKS
from cmcgns_cli.task_names import EVAL_ONLY_TASKS, FINETUNE_TASKS


def test_every_finetune_task_has_a_definition_and_no_name_is_listed_twice():
    assert set(FINETUNE_TASKS) == set(CLS_TASKS) | set(DENSE_TASKS)
    names = [*FINETUNE_TASKS, *EVAL_ONLY_TASKS]
    assert len(names) == len(set(names)) == 16
