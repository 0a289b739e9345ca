"""``support.kill_margin --chaos`` measures the chaos plants' margins (docs/mutation.md, "Kill margins"):
its table of each plant's trigger and catch must name every plant the runner knows, a nemesis kind the
schedule draws and an anomaly code the history checker reports; the seeds it picks are those whose
schedule holds the trigger (read off ``plan``), in order, none skipped."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable

from support.kill_margin import CHAOS, reaching

from adapters.chaos import history
from adapters.chaos.runner import PLANTS
from adapters.chaos.schedule import KINDS, PROFILES, Nemesis, plan


def test_the_table_names_every_plant_a_drawn_kind_and_a_reported_code() -> None:
    assert sorted(CHAOS) == sorted(PLANTS)
    reported = set(re.findall(r'Anomaly\("([a-z_]+)"', inspect.getsource(history)))
    for plant, (kind, codes, duration, _ci) in CHAOS.items():
        assert kind is None or kind.split()[0] in KINDS, plant
        assert codes and set(codes) <= reported, (plant, codes)
        assert duration > 0


TRIGGERS: dict[str, Callable[[Nemesis], bool]] = {  # written out here, not parsed from CHAOS's strings
    "skip-apply": lambda n: True,
    "fresh-key-retry": lambda n: True,
    "reset-keeps-epoch": lambda n: n.kind == "epoch_reset",
    "unsignalled-floor": lambda n: n.kind == "compaction",
    "bridge-drops-retry": lambda n: n.kind == "relay_outage" and n.params["how"] == 0,
}


def test_the_seeds_are_the_first_whose_schedule_holds_the_trigger() -> None:
    assert sorted(TRIGGERS) == sorted(CHAOS)
    for plant, (_kind, _codes, duration, _ci) in CHAOS.items():
        seeds, share = reaching(plant, 1, 3, upto=200)
        profile = dataclasses.replace(PROFILES["quick"], duration_s=duration)
        holding = [s for s in range(1, seeds[-1] + 1) if any(map(TRIGGERS[plant], plan(s, profile)))]
        assert seeds == holding, plant
        every = sum(any(map(TRIGGERS[plant], plan(s, profile))) for s in range(1, 201)) / 200
        assert share == every and 0 < share <= 1, (plant, share)
