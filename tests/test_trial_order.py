"""The order of an ablation's grid: seed by seed, measured longest first."""

import optuna
from optuna.trial import TrialState, create_trial

from gapan.space import optuna_distributions, parse_space
from gapan.tune.trial_order import SECONDS_ATTR, next_grid_point

SPACE = parse_space(
    '''"""Three depths."""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 2
SEARCH = {"flow.depth": {"type": "int", "values": [0, 4, 8]}}
BASELINE = 0
''',
    "order",
)


def _study(*finished: tuple[int, int, float | None, TrialState]) -> optuna.Study:
    """A study holding trials (depth, seed, seconds, state)."""
    study = optuna.create_study(direction="maximize")
    distributions = optuna_distributions(SPACE)
    for depth, seed, seconds, state in finished:
        study.add_trial(
            create_trial(
                params={"flow.depth": depth, "train.seed": seed},
                distributions=distributions,
                value=0.5 if state == TrialState.COMPLETE else None,
                state=state,
                user_attrs={} if seconds is None else {SECONDS_ATTR: seconds},
            )
        )
    return study


def _run_all(study: optuna.Study, seconds: dict[int, float]) -> list[tuple[int, int]]:
    """Ask for every remaining point in turn, completing each with `seconds[depth]`."""
    order = []
    while (point := next_grid_point(study, SPACE)) is not None:
        study.enqueue_trial(point)
        trial = study.ask(optuna_distributions(SPACE))
        trial.set_user_attr(SECONDS_ATTR, seconds[point["flow.depth"]])
        study.tell(trial, 0.5)
        order.append((point["flow.depth"], point["train.seed"]))
    return order


def test_first_seed_in_listed_order_then_longest_first():
    order = _run_all(_study(), seconds={0: 4.0, 4: 30.0, 8: 60.0})
    assert order == [(0, 0), (4, 0), (8, 0), (8, 1), (4, 1), (0, 1)]


def test_costs_are_the_mean_of_completed_trials_only():
    # Depth 0 took 20 s and depth 4 took 10 s: 0 before 4.
    study = _study(
        (0, 0, 20.0, TrialState.COMPLETE),
        (4, 0, 10.0, TrialState.COMPLETE),
        (8, 0, None, TrialState.FAIL),
    )
    # Depth 8's only trial failed: its cost is unknown, so it goes first; the failed point
    # itself is not run again.
    assert _run_all(study, seconds={0: 1.0, 4: 1.0, 8: 1.0}) == [(8, 1), (0, 1), (4, 1)]


def test_running_points_are_taken_and_a_full_grid_has_no_next_point():
    study = _study((8, 1, None, TrialState.RUNNING))
    order = _run_all(study, seconds={0: 1.0, 4: 1.0, 8: 1.0})
    assert (8, 1) not in order and len(order) == 5
    assert next_grid_point(study, SPACE) is None


def test_enqueued_points_carry_their_values_through_optuna():
    study = _study()
    point = next_grid_point(study, SPACE)
    study.enqueue_trial(point)
    trial = study.ask(optuna_distributions(SPACE))
    assert trial.params == point
