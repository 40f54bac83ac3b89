"""The published numbers the tables compare with ([R1], [R2]; docs/papers.md), and which runs
each row is about. A row's `match` is a test on a run's config; `paper` is the test error (%),
or FAIL where the paper reports "fail" (above 20%)."""

from collections.abc import Callable
from dataclasses import dataclass

from ..nets.units import usual_shortcut

FAIL = "fail"
FAIL_ABOVE = 20.0  # [R2] table 1: "fail" means a test error above 20%


@dataclass(frozen=True)
class Row:
    name: str
    match: Callable[[dict], bool]
    paper: float | str | None
    note: str = ""
    statistic: str = "median"  # what the paper's number is over seeds: median, mean or best


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple[Row, ...]


def cifar_net(
    depth: int | None,
    data: str | None = "cifar10",
    shortcut: str | None = None,
    activation: str = "original",
    variant: str = "identity",
    scales: tuple[float, float] = (1.0, 1.0),
    gate_bias: tuple[float, float] | None = None,
) -> Callable[[dict], bool]:
    """A test for the CIFAR net of `depth` with these unit settings (the rest at the papers'
    defaults). depth or data None: any depth or data set. shortcut None: the depth's usual one
    (A for basic units, B for bottleneck)."""

    def match(c: dict) -> bool:
        m = c["model"]
        ok = (
            data in (None, c["data"]["name"])
            and m["arch"] == "cifar"
            and depth in (None, m["depth"])
            and m["shortcut"] == (shortcut or usual_shortcut("cifar", m["block"]))
            and m["activation"] == activation
            and m["shortcut_variant"] == variant
            and (m["shortcut_scale"], m["residual_scale"]) == scales
        )
        if ok and gate_bias is not None:
            ok = gate_bias[0] <= m["gate_bias"] <= gate_bias[1]
        return ok and (variant != "dropout" or m["dropout_rate"] == 0.5)

    return match


R1_TABLE6 = Table(
    "[R1] table 6 and figure 6: CIFAR-10 test error (%)",
    (
        *(
            Row(f"plain-{d}", cifar_net(d, shortcut="none"), e, "read off [R1] figure 6")
            for d, e in ((20, 9.5), (32, 10.0), (44, 12.0), (56, 13.5))
        ),
        Row("ResNet-20", cifar_net(20), 8.75),
        Row("ResNet-32", cifar_net(32), 7.51),
        Row("ResNet-44", cifar_net(44), 7.17),
        Row("ResNet-56", cifar_net(56), 6.97),
        Row("ResNet-110", cifar_net(110), 6.43, "best of 5; mean 6.61 +- 0.16", "best"),
        Row("ResNet-1202", cifar_net(1202), 7.93),
    ),
)


@dataclass(frozen=True)
class Reproduction:
    """An independent reproduction of [R1] table 6 on the official CIFAR-10: its final test
    errors (%) by row name, how it trained, and where it says so."""

    name: str
    source: str
    recipe: str
    errors: dict


R1_TABLE6_REPRODUCTIONS = (
    Reproduction(
        "akamaster",
        "https://github.com/akamaster/pytorch_resnet_cifar10 (README)",
        "PyTorch; [R1]'s optimiser, augmentation and batch, 200 epochs (78k iterations) on all "
        "50k training images, lr divided by 10 at epochs 100 and 150; the best test error over "
        "the epochs",
        {
            "ResNet-20": 8.27,
            "ResNet-32": 7.37,
            "ResNet-44": 6.90,
            "ResNet-56": 6.61,
            "ResNet-110": 6.32,
        },  # fmt: skip
    ),
    Reproduction(
        "Keras example",
        "https://github.com/keras-team/keras, examples/cifar10_resnet.py (its docstring)",
        "Keras; Adam (lr 1e-3) at batch 32 for 200 epochs, projection shortcuts without BN "
        "where the shape changes; the checkpoint best on the test set",
        {
            "ResNet-20": 7.84,
            "ResNet-32": 7.54,
            "ResNet-44": 7.50,
            "ResNet-56": 7.29,
            "ResNet-110": 7.35,
        },  # fmt: skip
    ),
)
PAPER_ITERATIONS = 64000  # [R1] 4.2's CIFAR schedule: the reproductions compare with this only


def r2_table1_rows(depth: int | None, data: str | None = "cifar10") -> tuple[Row, ...]:
    """[R2] table 1's cases on a CIFAR net of `depth` (depth and data None: on any, for
    experiments that run the shortcut types on a shallower net, as shortcuts_cpu does)."""
    return (
        Row("original (identity)", cifar_net(depth, data), 6.61),
        Row("constant scaling 0.5 / 1", cifar_net(depth, data, scales=(0.5, 1.0)), FAIL),
        Row("constant scaling 0.5 / 0.5", cifar_net(depth, data, scales=(0.5, 0.5)), 12.35),
        *(
            Row(f"{kind} gating, b_g {name}", cifar_net(depth, data, variant=v, gate_bias=b), e)
            for kind, v, name, b, e in (
                ("exclusive", "exclusive_gating", "0 to -5", (-5, 0), FAIL),
                ("exclusive", "exclusive_gating", "-6", (-6, -6), 8.70),
                ("exclusive", "exclusive_gating", "-7", (-7, -7), 9.81),
                ("shortcut-only", "shortcut_gating", "0", (0, 0), 12.86),
                ("shortcut-only", "shortcut_gating", "-6", (-6, -6), 6.91),
            )
        ),
        Row("1x1 conv shortcut", cifar_net(depth, data, variant="conv1x1"), 12.22),
        Row("dropout 0.5 shortcut", cifar_net(depth, data, variant="dropout"), FAIL),
    )


R2_TABLE1 = Table(
    "[R2] table 1: shortcut types on ResNet-110, CIFAR-10 test error (%)", r2_table1_rows(110)
)

R2_TABLE2_NUMBERS = {  # activation: (ResNet-110, ResNet-164)
    "original": (6.61, 5.93),
    "bn_after_add": (8.17, 6.50),
    "relu_before_add": (7.84, 6.14),
    "relu_preact": (6.71, 5.91),
    "full_preact": (6.37, 5.46),
}
R2_TABLE2 = Table(
    "[R2] table 2: where BN and ReLU go, CIFAR-10 test error (%)",
    tuple(
        Row(f"ResNet-{depth}, {activation}", cifar_net(depth, activation=activation), error)
        for i, depth in enumerate((110, 164))
        for activation, errors in R2_TABLE2_NUMBERS.items()
        for error in (errors[i],)
    ),
)

R2_TABLES34_NUMBERS = {  # (data, depth): (original, full pre-activation)
    ("cifar10", 110): (6.61, 6.37),
    ("cifar10", 164): (5.93, 5.46),
    ("cifar10", 1001): (7.61, 4.92),
    ("cifar100", 164): (25.16, 24.33),
    ("cifar100", 1001): (27.82, 22.71),
}
R2_TABLES34_NOTES = {  # (data, depth, activation): [R2]'s mean +- std beside its median
    ("cifar10", 1001, "full_preact"): "mean 4.89 +- 0.14",
    ("cifar100", 1001, "full_preact"): "mean 22.68 +- 0.22",
}
R2_TABLES34 = Table(
    "[R2] tables 3 and 4: original against pre-activation units, test error (%)",
    tuple(
        Row(
            f"{data.upper().replace('CIFAR', 'CIFAR-')}, ResNet-{depth}, {activation}",
            cifar_net(depth, data=data, activation=activation),
            error,
            R2_TABLES34_NOTES.get((data, depth, activation), ""),
        )
        for (data, depth), errors in R2_TABLES34_NUMBERS.items()
        for activation, error in zip(("original", "full_preact"), errors, strict=True)
    ),
)

TABLES = (R1_TABLE6, R2_TABLE1, R2_TABLE2, R2_TABLES34)
