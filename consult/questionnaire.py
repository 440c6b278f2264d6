"""Questionnaire definitions: YAML data files, one version per round, question codes stable across years."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import pycountry
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consult.errors import ConsultError

QuestionKind = Literal["multi_select", "single_select", "integer", "number", "yes_no", "text", "matrix"]
# response_id: an anonymous round; each response is known only by the survey tool's own response id.
MatchKey = Literal["token", "partnership_id", "email", "response_id"]

# The choice a respondent makes when they write their own answer (``other: true``): the text is kept beside it.
OTHER = "other"

ISO3166 = "iso3166"


class Option(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    label: str
    previous_code: str | None = Field(default=None, description="The code this option had in the previous version.")
    comment: bool = Field(default=False, description="The tool exports a free-text comment beside this option.")


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    kind: QuestionKind
    label: str
    required: bool = False
    options: list[Option] | Literal["iso3166"] | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    previous_code: str | None = Field(default=None, description="The code this question had in the previous version.")
    # A matrix: rows of sub-questions sharing one option list (``options``) or one scale (``min``..``max``).
    rows: list[Option] | None = None
    labels: dict[int, str] | None = Field(default=None, description="Scale value -> label (matrix of a scale).")
    other: bool = Field(default=False, description="A select question whose respondents may write their own answer.")
    not_applicable: list[str] = Field(
        default_factory=list, description="Answers that mean the question was not asked (kept as missing)."
    )

    @field_validator("options", "rows", mode="before")
    @classmethod
    def _options_from_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"code": item, "label": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("code")
    @classmethod
    def _code_without_brackets(cls, value: str) -> str:
        # Brackets name a matrix row or an "other" text (``code[row]``): a question code never holds them.
        if any(mark in value for mark in "[]"):
            raise ValueError(f"question code {value!r}: brackets are reserved for matrix rows and other answers")
        return value

    @model_validator(mode="after")
    def _options_only_for_selects(self) -> Question:
        is_select = self.kind in ("multi_select", "single_select")
        if is_select and not self.options:
            raise ValueError(f"question {self.code!r}: a {self.kind} question needs options")
        if self.kind == "matrix":
            if not self.rows:
                raise ValueError(f"question {self.code!r}: a matrix question needs rows")
            if self.options == ISO3166:
                raise ValueError(f"question {self.code!r}: a matrix takes a list of options, not iso3166")
            scale = self.min is not None and self.max is not None
            if bool(self.options) == scale:
                raise ValueError(f"question {self.code!r}: a matrix needs either options or a min..max scale")
            if scale and not (float(self.min).is_integer() and float(self.max).is_integer()):
                raise ValueError(f"question {self.code!r}: a matrix scale runs between whole numbers")
        elif not is_select and self.options:
            raise ValueError(f"question {self.code!r}: only select questions take options")
        elif self.rows:
            raise ValueError(f"question {self.code!r}: only matrix questions take rows")
        if self.other and not is_select:
            raise ValueError(f"question {self.code!r}: only select questions take other: true")
        return self

    @property
    def is_select(self) -> bool:
        return self.kind in ("multi_select", "single_select")

    @cached_property
    def option_codes(self) -> frozenset[str]:
        """Allowed answer codes (ISO 3166-1 alpha-2 for ``options: iso3166``; ``other`` with ``other: true``)."""
        if self.options == ISO3166:
            return frozenset(country.alpha_2 for country in pycountry.countries)
        codes = frozenset(option.code for option in self.options or [])
        return codes | {OTHER} if self.other else codes

    @cached_property
    def option_lookup(self) -> dict[str, str]:
        """Answer as a tool writes it (code or label, any case) -> option code, for list options."""
        if not isinstance(self.options, list):
            return {}
        lookup: dict[str, str] = {}
        for option in self.options:
            lookup.setdefault(option.label.strip().casefold(), option.code)
        for option in self.options:  # a code wins over another option's label
            lookup[option.code.strip().casefold()] = option.code
        if self.other:
            lookup.setdefault(OTHER, OTHER)
            lookup.setdefault("-oth-", OTHER)  # LimeSurvey's code for "Other" in a single choice
        return lookup

    def option_label(self, code: str) -> str:
        if self.options == ISO3166:
            return country_name(code)
        for option in self.options or []:
            if option.code == code:
                return option.label
        if self.other and code == OTHER:
            return "Other"
        return code

    def answer_fields(self) -> list[Question]:
        """What one response holds for this question, each typed and validated on its own: the question
        itself, or one sub-question per matrix row (``code[row]``), plus the free text of ``other: true``
        (``code[other]``) and of options with ``comment: true`` (``code[OPTIONcomment]``)."""
        if self.kind == "matrix":
            row_kind: QuestionKind = "single_select" if self.options else "integer"
            return [
                Question(
                    code=self.code, kind=row_kind, label=f"{self.label} [{row.label}]", required=self.required,
                    options=self.options, min=self.min, max=self.max, labels=self.labels,
                    not_applicable=self.not_applicable,
                ).model_copy(update={
                    "code": f"{self.code}[{row.code}]",
                    "previous_code": f"{self.previous_code or self.code}[{row.previous_code or row.code}]",
                })
                for row in self.rows or []
            ]
        fields = [self]
        if self.other:
            fields.append(_free_text(f"{self.code}[{OTHER}]", f"{self.label} [Other]", self.not_applicable))
        for option in self.options if isinstance(self.options, list) else []:
            if option.comment:
                fields.append(_free_text(f"{self.code}[{option.code}comment]", f"{self.label} [{option.label} comment]",
                                         self.not_applicable))
        return fields

    def previous_option_code(self, code: str) -> str:
        """The code an option had in the previous questionnaire version (itself when unchanged)."""
        if isinstance(self.options, list):
            for option in self.options:
                if option.code == code and option.previous_code:
                    return option.previous_code
        return code


class Questionnaire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    version: int
    title: str
    match_by: list[MatchKey] = Field(default_factory=lambda: ["token"])
    # Answers that mean "not asked" in every question (a tool's not-shown marker), on top of each question's own.
    not_applicable: list[str] = Field(default_factory=list)
    questions: Annotated[list[Question], Field(min_length=1)]

    @model_validator(mode="after")
    def _anonymous_alone(self) -> Questionnaire:
        if "response_id" in self.match_by and len(self.match_by) > 1:
            raise ValueError("match_by: response_id (an anonymous round) cannot be combined with other keys")
        return self

    @property
    def anonymous(self) -> bool:
        """Responses carry no partnership: each is known by the survey tool's response id."""
        return "response_id" in self.match_by

    @cached_property
    def answer_fields(self) -> list[Question]:
        """Every field a response holds (see :meth:`Question.answer_fields`), in questionnaire order."""
        return [field for question in self.questions for field in question.answer_fields()]

    @model_validator(mode="after")
    def _codes_unique(self) -> Questionnaire:
        seen: set[str] = set()
        for question in self.questions:
            if question.code in seen:
                raise ValueError(f"question code {question.code!r} appears twice")
            seen.add(question.code)
        return self

    def question(self, code: str) -> Question:
        for question in self.questions:
            if question.code == code:
                return question
        raise KeyError(code)

    def field(self, code: str) -> Question:
        """An answer field by its code: a question, a matrix row ``code[row]`` or an other text ``code[other]``."""
        for field in self.answer_fields:
            if field.code == code:
                return field
        raise KeyError(code)

    @property
    def codes(self) -> list[str]:
        return [question.code for question in self.questions]

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        # Fields added for survey-tool exports are written only when set, so that a questionnaire that does not
        # use them keeps the text (and the sha256) it was stored with.
        _drop_defaults(data, ("not_applicable",))
        for question in data["questions"]:
            _drop_defaults(question, ("other", "not_applicable"))
            for option in question.get("options") if isinstance(question.get("options"), list) else []:
                _drop_defaults(option, ("comment",))
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()


def _drop_defaults(data: dict[str, object], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in data and not data[key]:
            del data[key]


def _free_text(code: str, label: str, not_applicable: list[str]) -> Question:
    # Built without validation: the bracketed code is what sets these fields apart from questions.
    return Question.model_construct(code=code, kind="text", label=label, required=False, options=None, min=None,
                                    max=None, max_length=None, previous_code=None, rows=None, labels=None,
                                    other=False, not_applicable=list(not_applicable))


def load_questionnaire(path: Path) -> Questionnaire:
    """Read and validate a questionnaire file; any problem is one ConsultError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConsultError(f"{path}: questionnaire file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConsultError(f"{path}: not a readable YAML file ({str(error).splitlines()[0]})") from None
    return parse_questionnaire(data, source=str(path))


def parse_questionnaire(data: object, *, source: str) -> Questionnaire:
    if not isinstance(data, dict):
        raise ConsultError(f"{source}: a questionnaire must be a mapping with code, version, title and questions")
    try:
        return Questionnaire.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConsultError(f"{source}: {where}: {first['msg']}") from None


def country_name(code: str) -> str:
    """Common English name of an ISO 3166-1 alpha-2 code, as the ECCP writes it."""
    country = pycountry.countries.get(alpha_2=code.upper())
    if country is None:
        return code
    return _PREFERRED_COUNTRY_NAMES.get(country.alpha_2, getattr(country, "common_name", None) or country.name)


# The ECCP's published wording where it differs from ISO's short names.
_PREFERRED_COUNTRY_NAMES = {
    "US": "United States of America",
    "KR": "Republic of Korea",
    "TW": "Taiwan",
    "RU": "Russia",
    "IR": "Iran",
    "VN": "Vietnam",
}
