import pytest
import torch

from lit_compress.models import encoder_layers, load_model_dir, save_model_dir, student_from_teacher
from lit_compress.models.hub import EMBEDDED_MODEL, load_classifier, resolve_model_path
from lit_compress.models.tiny import tiny_bert


def test_student_holds_exactly_the_teacher_tensors() -> None:
    teacher = tiny_bert(seed=0, num_layers=4)
    student = student_from_teacher(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    t_state, s_state = teacher.state_dict(), student.state_dict()
    mapping = {0: 0, 1: 3}
    for name, tensor in s_state.items():
        if ".encoder.layer." in name:
            prefix, rest = name.split(".encoder.layer.")
            index, tail = rest.split(".", 1)
            source = f"{prefix}.encoder.layer.{mapping[int(index)]}.{tail}"
        else:
            source = name
        assert torch.equal(tensor, t_state[source]), name
    # no tensor is shared: training the student leaves the teacher untouched
    encoder_layers(student)[0].attention.self.query.weight.data.add_(1.0)
    assert not torch.equal(encoder_layers(student)[0].attention.self.query.weight, encoder_layers(teacher)[0].attention.self.query.weight)


def test_student_forward_equals_teacher_when_all_layers_kept() -> None:
    teacher = tiny_bert(seed=0, num_layers=2)
    student = student_from_teacher(teacher, [0, 1]).eval()
    ids = torch.randint(0, 128, (2, 7))
    assert torch.allclose(student(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-6)


@pytest.mark.parametrize("layers", [[], [0, 9]])
def test_bad_layers_are_rejected(layers: list[int]) -> None:
    with pytest.raises(ValueError, match="layer"):
        student_from_teacher(tiny_bert(num_layers=2), layers)


def test_save_and_load_model_dir_round_trip(tmp_path) -> None:
    model = tiny_bert(seed=4)
    save_model_dir(model, tmp_path / "m")
    loaded = load_model_dir(tmp_path / "m")
    ids = torch.randint(0, 128, (3, 5))
    assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-6)


def test_embedded_teacher_resolves_offline() -> None:
    path = resolve_model_path(EMBEDDED_MODEL)
    model = load_classifier(EMBEDDED_MODEL, labels=["a", "b", "c", "d", "e"])
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert model.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}
    assert path.endswith("model")


def test_unknown_embedded_name_is_explained() -> None:
    with pytest.raises(ValueError, match="embedded default"):
        resolve_model_path("embedded:gpt-99")
