"""Typed `quantization_config`: pydantic models with compressed-tensors' own field names
and types (its QuantizationArgs, QuantizationScheme, QuantizationConfig and
SparsityCompressionConfig), so a value of the wrong type becomes a CodecError naming
the file and the field path instead of a TypeError deep in the reader. Fields that
compressed-tensors tolerates beyond these stay tolerated (extra="allow")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import CodecError


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class QuantizationArgs(_Model):
    num_bits: int = Field(8, ge=1, le=8)
    type: Literal["int", "float"] = "int"
    symmetric: bool = True
    group_size: int | None = None
    strategy: Literal["tensor", "channel", "group", "block", "token", "tensor_group", "attn_head"] | None = None
    block_structure: list[Annotated[int, Field(ge=1)]] | str | None = None  # or the legacy "128x128"
    dynamic: bool | Literal["local"] = False
    actorder: bool | Literal["group", "weight", "static", "dynamic"] | None = None
    scale_dtype: str | None = None
    zp_dtype: str | None = None
    observer: str | None = None
    observer_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("group_size")
    @classmethod
    def _positive_or_minus_one(cls, value: int | None) -> int | None:
        if value is not None and value != -1 and value < 1:
            raise ValueError("group_size must be positive, or -1 for one group per row")
        return value


class QuantizationScheme(_Model):
    targets: list[str]
    weights: QuantizationArgs | None = None
    input_activations: QuantizationArgs | None = None
    output_activations: QuantizationArgs | None = None
    format: str | None = None


class SparsityConfig(_Model):
    format: str
    targets: list[str] | None = None
    ignore: list[str] | None = None
    global_sparsity: float | None = 0.0
    sparsity_structure: str | None = "unstructured"


class TransformArgs(_Model):
    """Where a transform applies (compressed-tensors' TransformArgs)."""

    targets: list[str]
    location: Literal["input", "weight_input", "weight_output", "output", "k_cache", "q_attn"]
    inverse: bool = False
    ignore: list[str] = Field(default_factory=list)


class TransformScheme(_Model):
    """One transform and the places it applies (compressed-tensors' TransformScheme)."""

    type: str
    apply: list[TransformArgs] = Field(default_factory=list)
    randomize: bool = False
    requires_grad: bool = False
    head_dim: int | None = None
    precision: str = "torch.float32"


class TransformConfig(_Model):
    config_groups: dict[str, TransformScheme]


class QuantizationConfig(_Model):
    """compressed-tensors' `quantization_config` (alias `compression_config`)."""

    config_groups: dict[str, Union[QuantizationScheme, list[str]]] = Field(default_factory=dict)
    quant_method: str = "compressed-tensors"
    kv_cache_scheme: QuantizationArgs | None = None
    format: str | None = None
    quantization_status: str | None = None
    global_compression_ratio: float | None = None
    ignore: list[str] | None = None
    sparsity_config: SparsityConfig | None = None
    # compressed-tensors writes {} for "no transforms"
    transform_config: Union[TransformConfig, Annotated[dict[str, Any], Field(max_length=0)]] | None = None
    version: str | None = None

    @field_validator("sparsity_config", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == {} else value  # compressed-tensors writes {} for "no sparsity"


class SpqrConfig(_Model):
    """ctcodec's SpQR entry (quant_method "ctcodec", format "spqr")."""

    quant_method: Literal["ctcodec"]
    format: Literal["spqr"]
    bits: int = Field(ge=1, le=8)
    beta1: int = Field(ge=1)
    beta2: int = Field(ge=1)
    qq_scale_bits: int = Field(ge=1, le=8)
    qq_zero_bits: int = Field(ge=1, le=8)
    dtype: str = "bfloat16"
    outlier_layout: str = "csr"
    ignore: list[str] | None = None
    version: str | None = None


# Union arms pydantic puts into error locations ("list[str]", "literal[...]", "bool",
# a model's name); a field path leaves them out.
_ARMS = {"QuantizationScheme", "QuantizationArgs", "SparsityConfig", "TransformConfig", "TransformScheme",
         "TransformArgs", "bool", "str", "int", "float"}


def _is_arm(part: Any) -> bool:
    return isinstance(part, str) and (part in _ARMS or "[" in part or part.startswith("constrained-"))


def _describe(error: dict[str, Any]) -> str:
    path = ".".join(str(part) for part in error["loc"] if not _is_arm(part))
    got = error.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) or len(repr(got)) < 60 else type(got).__name__
    return f"{path or '(top level)'}: {error['msg']}, got {shown}"


def serialise_quantization_config(qc: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """The `quantization_config` a writer puts in config.json, through the same models
    the reader checks with: validated, then dumped (every field that was set, extras
    included; config.json is written with sorted keys, so field order is moot)."""
    model = _model_for(qc, where)
    if model is None:
        return qc
    try:
        return model.model_validate(qc).model_dump(mode="json", exclude_unset=True)
    except ValidationError as e:
        raise CodecError(f"{where}: ctcodec would write an invalid quantization_config: {e}") from None


def _model_for(qc: Any, where: str | Path) -> type[BaseModel] | None:
    if not isinstance(qc, dict):
        raise CodecError(f"{where}: quantization_config: expected an object, got {type(qc).__name__}")
    if qc.get("quant_method") == "ctcodec" and qc.get("format") == "spqr":
        return SpqrConfig
    if qc.get("quant_method", "compressed-tensors") == "compressed-tensors":
        return QuantizationConfig
    return None  # another library's quantization (gptq, awq, ...): not ours to check


def validate_quantization_config(qc: Any, where: str | Path) -> None:
    """Raises CodecError naming `where` and the first bad field when the
    `quantization_config` of a config.json does not have compressed-tensors' types."""
    model = _model_for(qc, where)
    if model is None:
        return
    try:
        model.model_validate(qc)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        # A malformed scheme group fails both arms of the union: report the scheme arm's errors.
        errors = [x for x in errors if "list[str]" not in map(str, x["loc"])] or errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CodecError(f"{where}: quantization_config.{_describe(first)}{more}") from None
