"""Questionnaire definitions: YAML data files, one version per round, question codes stable across years."""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import pycountry
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consult.errors import ConsultError

QuestionKind = Literal["multi_select", "single_select", "integer", "number", "scale", "yes_no", "text"]
MatchKey = Literal["token", "partnership_id", "email"]

ISO3166 = "iso3166"
_ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_]*")


class Option(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    label: str
    previous_code: str | None = Field(default=None, description="The code this option had in the previous version.")


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
    labels: dict[int, str] | None = Field(default=None, description="A scale's wording of its values, e.g. {1: Poor}.")
    previous_code: str | None = Field(default=None, description="The code this question had in the previous version.")

    @field_validator("options", mode="before")
    @classmethod
    def _options_from_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"code": item, "label": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _options_only_for_selects(self) -> Question:
        is_select = self.kind in ("multi_select", "single_select")
        if is_select and not self.options:
            raise ValueError(f"question {self.code!r}: a {self.kind} question needs options")
        if not is_select and self.options:
            raise ValueError(f"question {self.code!r}: only select questions take options")
        if self.kind == "scale":
            self._check_scale()
        elif self.labels:
            raise ValueError(f"question {self.code!r}: only scale questions take labels")
        return self

    def _check_scale(self) -> None:
        for bound, value in (("min", self.min), ("max", self.max)):
            if value is None or not float(value).is_integer():
                raise ValueError(f"question {self.code!r}: a scale question needs a whole-number {bound}")
        if self.min >= self.max:  # type: ignore[operator]
            raise ValueError(f"question {self.code!r}: a scale's min ({self.min:g}) must be below its max ({self.max:g})")
        if self.max - self.min > 100:  # type: ignore[operator]
            raise ValueError(f"question {self.code!r}: a scale has at most 101 values ({self.min:g}..{self.max:g})")
        for value, label in (self.labels or {}).items():
            if not self.min <= value <= self.max:  # type: ignore[operator]
                raise ValueError(f"question {self.code!r}: label for {value} is outside the scale "
                                 f"{self.min:g}..{self.max:g}")
            if not label.strip():
                raise ValueError(f"question {self.code!r}: the label for {value} is empty")

    @property
    def scale_values(self) -> list[int]:
        """A scale's values, lowest first (empty for other kinds)."""
        if self.kind != "scale" or self.min is None or self.max is None:
            return []
        return list(range(int(self.min), int(self.max) + 1))

    def scale_label(self, value: int) -> str:
        """A scale value as the questionnaire words it: ``5 - Very satisfied``, or ``5`` without a label."""
        label = (self.labels or {}).get(value)
        return f"{value} - {label}" if label else str(value)

    @property
    def is_select(self) -> bool:
        return self.kind in ("multi_select", "single_select")

    @cached_property
    def option_codes(self) -> frozenset[str]:
        """Allowed answer codes (ISO 3166-1 alpha-2 for ``options: iso3166``)."""
        if self.options == ISO3166:
            return frozenset(country.alpha_2 for country in pycountry.countries)
        return frozenset(option.code for option in self.options or [])

    def option_label(self, code: str) -> str:
        if self.options == ISO3166:
            return country_name(code)
        for option in self.options or []:
            if option.code == code:
                return option.label
        return code

    def previous_option_code(self, code: str) -> str:
        """The code an option had in the previous questionnaire version (itself when unchanged)."""
        if isinstance(self.options, list):
            for option in self.options:
                if option.code == code and option.previous_code:
                    return option.previous_code
        return code


class Respondent(BaseModel):
    """How the summary names one respondent and several (``cluster``/``clusters``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    singular: str = "partnership"
    plural: str = "partnerships"

    @field_validator("singular", "plural")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not value.strip() or "\n" in value or "\r" in value:
            raise ValueError("a respondent name is one non-empty line")
        return value.strip()


class AddedIndicator(BaseModel):
    """A declared indicator beyond the defaults: the respondents who chose any of some options of a select
    question (e.g. ``north_america``: US or CA), overall and per breakdown, with its share."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    question: str
    any_of: Annotated[list[str], Field(min_length=1)]
    label: str | None = None


class QuestionWording(BaseModel):
    """How the summary words one question (all optional; the defaults fit any questionnaire).

    ``sentence`` is a template whose fields the engine fills in per kind (see ``consult/narrative.py``);
    ``intro`` (for ``style: by_group``) is one template, or one per value of the first breakdown attribute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str | None = None
    section: str | None = None  # consecutive questions with the same section share one paragraph
    noun: str | None = None  # what an answer is called: "market" (plural "markets" unless ``nouns`` says)
    nouns: str | None = None
    unit: str | None = None  # what a number counts: "cooperation agreement"
    units: str | None = None
    sentence: str | None = None
    style: Literal["ranked", "by_group"] | None = None
    intro: str | dict[str, str] | None = None
    chart: bool = True


class IndicatorsSection(BaseModel):
    """The optional ``indicators:`` section: renames, hides or adds indicators, their labels, ranking, the
    summary's overview rows and its wording."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rename: dict[str, str] = Field(default_factory=dict)
    hide: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    unranked: list[str] = Field(default_factory=list)
    add: list[AddedIndicator] = Field(default_factory=list)
    overview: list[str] | None = None
    key_figures: list[str] | None = None
    breakdown_labels: dict[str, str] = Field(
        default_factory=dict, description="How a breakdown value is named: {sector: 'the {value} sector'}.")
    wording: dict[str, QuestionWording] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_unique(self) -> IndicatorsSection:
        targets = list(self.rename.values())
        if len(set(targets)) != len(targets):
            raise ValueError("two indicators are renamed to the same name")
        for template in self.breakdown_labels.values():
            if "{value}" not in template:
                raise ValueError(f"breakdown label {template!r} must contain {{value}}")
        return self


class Questionnaire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    version: int
    title: str
    match_by: list[MatchKey] = Field(default_factory=lambda: ["token"])
    breakdown_by: list[str] = Field(
        default_factory=list, description="Panel attributes every indicator is also computed by (e.g. [sector]).")
    respondent: Respondent = Field(default_factory=Respondent)
    questions: Annotated[list[Question], Field(min_length=1)]
    indicators: IndicatorsSection | None = None

    @model_validator(mode="after")
    def _indicators_name_questions(self) -> Questionnaire:
        if self.indicators is None:
            return self
        codes = set(self.codes)
        for code in self.indicators.wording:
            if code not in codes:
                raise ValueError(f"indicators.wording: {code!r} is not a question of this questionnaire")
        for added in self.indicators.add:
            if added.question not in codes or not self.question(added.question).is_select:
                raise ValueError(f"indicators.add {added.name!r}: {added.question!r} is not a select question")
            unknown = [code for code in added.any_of if code not in self.question(added.question).option_codes]
            if unknown:
                raise ValueError(f"indicators.add {added.name!r}: unknown option(s) {', '.join(unknown)}")
        return self

    def wording(self, code: str) -> QuestionWording:
        """How the summary words question ``code`` (defaults when the questionnaire says nothing)."""
        if self.indicators is not None and code in self.indicators.wording:
            return self.indicators.wording[code]
        return QuestionWording()

    @field_validator("breakdown_by")
    @classmethod
    def _breakdowns_are_attribute_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ATTRIBUTE_NAME.fullmatch(name):
                raise ValueError(f"breakdown attribute {name!r} is not a panel column name (letters, digits, _)")
        if len(set(value)) != len(value):
            raise ValueError("a breakdown attribute is named twice")
        return value

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

    @property
    def codes(self) -> list[str]:
        return [question.code for question in self.questions]

    def definition(self) -> dict[str, object]:
        """The questionnaire as stored: sections left at their defaults are left out, so that a questionnaire
        written before they existed keeps its content hash."""
        data = self.model_dump(mode="json", exclude_none=True)
        if not self.breakdown_by:
            data.pop("breakdown_by", None)
        if self.respondent == Respondent():
            data.pop("respondent", None)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.definition(), sort_keys=False, allow_unicode=True)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()


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
