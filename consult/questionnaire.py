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

QuestionKind = Literal["multi_select", "single_select", "integer", "number", "scale", "yes_no", "text", "matrix"]
# response_id: an anonymous round; each response is known only by the survey tool's own response id.
MatchKey = Literal["token", "partnership_id", "email", "response_id"]

# The choice a respondent makes when they write their own answer (``other: true``): the text is kept beside it.
OTHER = "other"

ISO3166 = "iso3166"
_ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_]*")


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
    labels: dict[int, str] | None = Field(default=None, description="A scale's wording of its values, e.g. {1: Poor}.")
    previous_code: str | None = Field(default=None, description="The code this question had in the previous version.")
    # A matrix: rows of sub-questions sharing one option list (``options``) or one scale (``min``..``max``).
    rows: list[Option] | None = None
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
        if self.kind == "scale" or (self.kind == "matrix" and self.matrix_row_kind == "scale"):
            self._check_scale()
        elif self.labels:
            raise ValueError(f"question {self.code!r}: only scale questions take labels (and matrices of a scale)")
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
    def matrix_row_kind(self) -> QuestionKind:
        """What each row of a matrix is: a choice among its options, a rating on its scale (labelled, or at most
        eleven points), else a whole number (hours, counts)."""
        if self.options:
            return "single_select"
        if self.labels or (self.min is not None and self.max is not None and self.max - self.min <= 10):
            return "scale"
        return "integer"

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
            row_kind = self.matrix_row_kind
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
    # Answers that mean "not asked" in every question (a tool's not-shown marker), on top of each question's own.
    not_applicable: list[str] = Field(default_factory=list)
    breakdown_by: list[str] = Field(
        default_factory=list, description="Panel attributes every indicator is also computed by (e.g. [sector]).")
    respondent: Respondent = Field(default_factory=Respondent)
    dayfirst: bool = Field(
        default=False,
        description="Submit dates such as 04/03/2019 are day first (4 March); without it only ISO 8601 is read.",
    )
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

    @cached_property
    def indicator_fields(self) -> list[Question]:
        """What indicators are computed for: each question, a matrix as its rows (``code[row]``, each like a
        select or scale question); other texts and option comments are answers to read, not to count."""
        fields: list[Question] = []
        for question in self.questions:
            fields += question.answer_fields()[: len(question.rows or [])] if question.kind == "matrix" else [question]
        return fields

    def field(self, code: str) -> Question:
        """An answer field by its code: a question, a matrix row ``code[row]`` or an other text ``code[other]``."""
        for field in self.answer_fields:
            if field.code == code:
                return field
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
        # Fields added for survey-tool exports likewise (issue 16).
        _drop_defaults(data, ("not_applicable",))
        for question in data["questions"]:
            _drop_defaults(question, ("other", "not_applicable"))
            for option in question.get("options") if isinstance(question.get("options"), list) else []:
                _drop_defaults(option, ("comment",))
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.definition(), sort_keys=False, allow_unicode=True)

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


# libyaml's safe loader when PyYAML was built with it (its wheels are): the same documents, read about ten times
# faster than by the pure-Python one (questionnaires are read by every command, form page and test).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_questionnaire(path: Path) -> Questionnaire:
    """Read and validate a questionnaire file; any problem is one ConsultError naming the file."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
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
