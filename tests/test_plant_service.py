"""Plant and teardown services: rollback leaves nothing, teardown keeps what it could not delete."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from morpheus_local.provider import LocalProvider, LocalSettings

from morpheus.blueprint import NodeBlueprint
from morpheus.errors import PlantFailedError, ProviderError
from morpheus.models import ForestStatus, NodeStatus, Ports
from morpheus.provider import NodeHandle, Reservation
from morpheus.registry import Registry
from morpheus.services import Context, no_progress
from morpheus.services.plant import PlantPlan, PlantRequest, plant
from morpheus.services.teardown import remove_forest, teardown
from morpheus.settings import Settings
from morpheus.testing.nats import processes_mentioning


@pytest.fixture
def context(state_dir: Path) -> Iterator[Context]:
    registry = Registry.in_state_dir(state_dir)
    yield Context(settings=Settings(), state_dir=state_dir, registry=registry)
    registry.close()


def local(context: Context, cls: type[LocalProvider] = LocalProvider) -> LocalProvider:
    return cls(LocalSettings(), context.state_dir / "local")


def plant_with(context: Context, provider: LocalProvider, count: int, keep: bool = False) -> str:
    request = PlantRequest(target="local", nodes=count, keep_on_failure=keep)
    return plant(context, PlantPlan(provider, "custom", count, []), request, no_progress).forest.id


def test_plant_records_active_nodes_with_capacity(context: Context) -> None:
    forest_id = plant_with(context, local(context), 3)
    forest = context.registry.get_forest(forest_id)
    assert forest.status == ForestStatus.ACTIVE
    nodes = context.registry.nodes(forest_id)
    assert [n.status for n in nodes] == [NodeStatus.ACTIVE] * 3
    assert all(n.capacity is not None and n.capacity.memory_bytes > 0 for n in nodes)
    assert len({n.ports.monitor for n in nodes}) == 3
    teardown(context, forest_id, no_progress)
    assert context.registry.list_forests() == []


def never_ready(context: Context, directory: Path) -> LocalProvider:
    """Local nodes whose "nats-server" never opens a port: a real one may be up before a
    slow machine first checks, and a deadline already past is met by a node found ready."""
    silent = directory / "nats-server"
    silent.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    silent.chmod(0o755)
    return LocalProvider(LocalSettings(nats_server=silent), context.state_dir / "local")


def test_readiness_timeout_rolls_back_everything(context: Context, tmp_path: Path) -> None:
    context.settings.provisioning.readiness_timeout = 0.001
    with pytest.raises(PlantFailedError, match="rolled back, 3 node") as caught:
        plant_with(context, never_ready(context, tmp_path), 3)
    assert "did not open its ports in time" in str(caught.value)
    assert caught.value.removal is not None and not caught.value.removal.failed
    assert context.registry.list_forests() == []
    assert processes_mentioning(str(context.state_dir)) == []


def test_a_server_answering_for_another_is_caught(context: Context) -> None:
    first = plant_with(context, local(context), 1)
    (running,) = context.registry.nodes(first)

    own_ports: dict[str, Ports] = {}

    class Clashing(LocalProvider):
        """Records the running node's ports while its own server listens on free ones.

        Its server must keep running: one that clashed on a port would exit first, and the
        failure would be that exit rather than the answer from another server.
        """

        def reserve_addresses(
            self, forest_id: str, run_id: str, node_ids: list[str]
        ) -> list[Reservation]:
            mine = super().reserve_addresses(forest_id, run_id, node_ids)
            own_ports.update({r.node_id: r.ports for r in mine})
            return [r.model_copy(update={"ports": running.ports}) for r in mine]

        def create_node(self, blueprint: NodeBlueprint) -> NodeHandle:
            own = own_ports[blueprint.node_id]
            return super().create_node(blueprint.model_copy(update={"ports": own}))

    with pytest.raises(PlantFailedError, match=f"another NATS server \\({running.id}\\)"):
        plant_with(context, local(context, Clashing), 1)
    assert [f.id for f in context.registry.list_forests()] == [first]
    assert processes_mentioning(f"{context.state_dir}/local/{first}")


def test_keep_on_failure_keeps_rows_and_nodes(context: Context, tmp_path: Path) -> None:
    context.settings.provisioning.readiness_timeout = 0.001
    with pytest.raises(PlantFailedError, match="kept for inspection"):
        plant_with(context, never_ready(context, tmp_path), 2, keep=True)
    (forest,) = context.registry.list_forests()
    assert forest.status == ForestStatus.FAILED
    assert {n.status for n in context.registry.nodes(forest.id)} == {NodeStatus.FAILED}
    assert processes_mentioning(str(context.state_dir))
    removal = remove_forest(context, local(context), forest.id, no_progress)
    assert not removal.failed
    assert processes_mentioning(str(context.state_dir)) == []


class Stubborn(LocalProvider):
    """Cannot delete node 2 (the fault a stuck platform would produce)."""

    def delete_node(self, handle: NodeHandle) -> None:
        if handle.node_id.endswith("-node-2"):
            raise ProviderError("platform refused")
        super().delete_node(handle)


def test_teardown_keeps_the_rows_of_what_it_could_not_delete(context: Context) -> None:
    forest_id = plant_with(context, local(context), 3)
    removal = remove_forest(context, local(context, Stubborn), forest_id, no_progress)
    assert removal.failed.keys() == {f"{forest_id}-node-2", "forest resources"}
    assert [n.name for n in context.registry.nodes(forest_id)] == ["node-2"]
    assert context.registry.get_forest(forest_id).status == ForestStatus.DELETING
    assert [e.kind for e in context.registry.events(forest_id)][-1] == "teardown-incomplete"
    removal = remove_forest(context, local(context), forest_id, no_progress)
    assert removal.deleted == [f"{forest_id}-node-2"]
    assert context.registry.list_forests() == []


class Interrupted(LocalProvider):
    """The operator presses Ctrl-C while the nodes start."""

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        raise KeyboardInterrupt


@pytest.mark.parametrize("rollback", [True, False])
def test_ctrl_c_asks_once_then_rolls_back_or_keeps(context: Context, rollback: bool) -> None:
    asked: list[bool] = []

    def answer() -> bool:
        asked.append(rollback)
        return rollback

    request = PlantRequest(target="local", nodes=2)
    plan = PlantPlan(local(context, Interrupted), "custom", 2, [])
    with pytest.raises(PlantFailedError, match="interrupted"):
        plant(context, plan, request, no_progress, rollback_on_interrupt=answer)
    assert asked == [rollback]
    if rollback:
        assert context.registry.list_forests() == []
        assert processes_mentioning(str(context.state_dir)) == []
    else:
        (forest,) = context.registry.list_forests()
        assert forest.status == ForestStatus.FAILED
        assert len(processes_mentioning(str(context.state_dir))) == 2
        assert not remove_forest(context, local(context), forest.id, no_progress).failed


def test_sigint_from_a_script_rolls_back(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import subprocess
    import sys

    # A "nats-server" that never opens a port: plant is still waiting when SIGINT comes,
    # however loaded the machine (with the real one it could finish first).
    silent = tmp_path / "bin" / "nats-server"
    silent.parent.mkdir()
    silent.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    silent.chmod(0o755)
    monkeypatch.setenv("MORPHEUS_NATS_SERVER", str(silent))
    Path("config.yaml").write_text("provisioning:\n  readiness_timeout: 240\n")
    with subprocess.Popen(
        [sys.executable, "-m", "morpheus", "plant", "local", "medium"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as command:
        assert command.stderr is not None
        for line in command.stderr:
            if "creating" in line:
                break
        command.send_signal(signal.SIGINT)
        _, err = command.communicate(timeout=60)
    assert command.returncode == 130, err
    assert "plant was interrupted; rolled back" in err
    assert processes_mentioning(str(state_dir)) == []
    assert not list(state_dir.glob("local/*/*"))
