"""The shapes of the API's answers, for the OpenAPI document (``api.openapi``).

The routes build their answers as plain dicts (``ledger.schemas``, ``catalog.service``,
``submissions.service``, ``api.compat``) and send them as they are; these models only describe
them, so that a client can be generated from the document and schemathesis can check every
answer against it (tests/test_openapi_contract.py). Every model allows extra fields: the shapes
of the design's appendix may grow ("add fields freely, keep these"), and ``required`` lists the
fields that are always there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MONEY_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
Money = Annotated[str, Field(pattern=MONEY_PATTERN, description='A decimal string in the currency, like "12.50".',
                             examples=["12.50"])]
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"}, description="ISO 8601 in UTC.",
                            examples=["2026-01-15T10:00:00Z"])]
Day = Annotated[str, Field(json_schema_extra={"format": "date"}, examples=["2026-01-15"])]
Cursor = Annotated[str | None, Field(description="Give it as `cursor` for the next page; null on the last page.")]
State = Literal["PENDING", "APPROVED", "REVERSED"]


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- errors ------------------------------------------------------------------------------------


class Problem(Shape):
    """An error (RFC 9457 problem+json). ``code`` is stable for scripts; ``detail`` is written for a
    person. Some errors add fields (``first_submission`` of ``duplicate_file``; the compatible
    API's ``Status``/``Message`` and ``column``)."""

    type: str = Field(examples=["/problems/not_found"])
    title: str
    status: int
    detail: str
    code: str = Field(examples=["not_found", "validation_error", "invalid_amount", "action_locked"])


# --- catalog -----------------------------------------------------------------------------------


class AccountInfo(Shape):
    sid: str
    name: str
    alert_email: str | None = Field(description="Where failures of the intake channels are mailed, once per "
                                                "failure spell (docs/CHANNELS.md).")


class Campaign(Shape):
    id: int
    name: str
    currency: str = Field(examples=["USD"])
    ftp_username: str
    returns_email: str
    created_at: Time | None


class CampaignCreated(Campaign):
    ftp_password: str | None = Field(None, description="The generated FTP password, shown this once "
                                                       "(absent when the request gave one).")


class CampaignList(Shape):
    items: list[Campaign]


class Partner(Shape):
    id: int
    name: str
    created_at: Time | None


class PartnerList(Shape):
    items: list[Partner]


class DispositionCode(Shape):
    code: str
    name: str
    operation: Literal["approve", "reverse", "modify"]


class IntakeRun(Shape):
    """One run of a channel: a pull from the brand's server, a Salesforce poll."""

    id: int
    campaign_id: int
    event_type_id: int | None
    channel: str = Field(examples=["ftp_pull", "salesforce"])
    trigger: str = Field(examples=["schedule", "run_now"])
    started_at: Time
    finished_at: Time | None
    outcome: Literal["running", "ok", "failed"]
    files_taken: int
    duplicates: int
    skipped: int
    submissions: list[str] = Field(description="The submissions the run queued (F-17 …).")
    detail: str | None = Field(description="Why a failed run failed, or notes of one that worked, for people.")


class FailureSpell(Shape):
    source: str
    failing_since: Time
    last_failure_at: Time
    failures: int
    last_error: str
    alerted_at: Time | None


class IntakeStatus(Shape):
    last_run: IntakeRun | None = Field(description="The latest run of the channel: a pull, a poll, an upload to "
                                                   "the campaign's FTP login, a mail to its address.")
    failing: FailureSpell | None = Field(description="While the channel fails: since when, how often, the last "
                                                     "error (null once a run works again).")


class ReturnsProcessing(Shape):
    """The mode and its settings; secrets show only as ``<name>_set: true``."""

    mode: Literal["manual", "api", "ftp_upload", "ftp_pull", "email", "salesforce"]
    status: IntakeStatus | None = None


class EventType(Shape):
    id: int
    campaign_id: int
    name: str
    locking: Literal["contract", "open_ended"]
    returns_processing: ReturnsProcessing
    disposition_codes: list[DispositionCode]
    created_at: Time | None


class EventTypeList(Shape):
    items: list[EventType]


class PayoutRate(Shape):
    """One event type's payout: ``percent`` of the amount, or a ``fixed`` amount."""

    event_type_id: int
    percent: str | None = None
    fixed: Money | None = None


class Period(Shape):
    months: int
    days: int


class Contract(Shape):
    id: int
    campaign_id: int
    partner_id: int
    starts_on: Day
    payout: list[PayoutRate]
    category_percent: dict[str, str]
    lock_after: Period
    pay_after: Period
    referral_window_days: int
    created_at: Time | None


class ContractList(Shape):
    items: list[Contract]


class Click(Shape):
    id: int
    campaign_id: int
    partner_id: int
    customer_id: str
    clicked_at: Time


class Reason(Shape):
    code: str
    name: str
    system_only: bool
    custom: bool
    operation: Literal["approve", "reverse", "modify"] | None = Field(
        None, description="Custom disposition codes only.")


class ReasonList(Shape):
    items: list[Reason]


# --- actions -----------------------------------------------------------------------------------


class ActionItem(Shape):
    sku: str
    name: str | None
    category: str | None
    quantity: int
    amount: Money
    payout: Money
    intended_quantity: int
    intended_amount: Money
    intended_payout: Money


class UpdateItem(Shape):
    sku: str
    quantity: int
    amount: Money
    payout: Money


class ActionUpdate(Shape):
    at: Time
    kind: Literal["CREATED", "APPROVED", "REVERSED", "RESTORED", "MODIFIED", "RESET", "LOCKED"]
    state: State
    reason: str | None
    note: str | None
    delta_amount: Money
    delta_payout: Money
    items: list[UpdateItem] | None = Field(description="The items after the change, when they changed.")
    channel: str = Field(examples=["api", "web", "file", "ftp", "ftp_pull", "email", "salesforce", "system"])
    submission_id: int | str | None = Field(description="The submission that made the change, if one did.")
    actor: str | None


class ActionSummary(Shape):
    """An action as lists show it (without ``updates``)."""

    id: int
    campaign_id: int
    event_type_id: int
    partner_id: int
    contract_id: int | None
    order_id: str
    customer_id: str | None
    promo_code: str | None
    event_date: Time
    state: State
    status_detail: str | None = Field(description="R16: PENDING null, or OPEN under open-ended locking; "
                                                  "REVERSED the reversal reason; APPROVED PAYMENT_PENDING "
                                                  "until clearing_date, then PAID.")
    currency: str
    amount: Money
    payout: Money
    intended_amount: Money
    intended_payout: Money
    locking_date: Day | None
    lock_due: Day | None
    locked_at: Time | None
    clearing_date: Day | None = Field(default=None, description="R16: when a locked APPROVED action is paid "
                                      "(the last day of the month it locked in + the contract's pay_after); "
                                      "null for any other action.")
    version: int
    items: list[ActionItem]


class Action(ActionSummary):
    """An action with its history."""

    updates: list[ActionUpdate]


class ChangedAction(Action):
    """The action as it is after a change, with what the change did (R11: ``unchanged`` wrote nothing)."""

    outcome: Literal["applied", "unchanged"]


class ActionList(Shape):
    items: list[ActionSummary]
    next_cursor: Cursor


class LockRun(Shape):
    locked: int = Field(description="How many actions this run locked.")


# --- submissions -------------------------------------------------------------------------------


class Submission(Shape):
    id: str = Field(examples=["F-17", "A-18"], description="F-… for a file, A-… for JSON rows or an undo.")
    campaign_id: int
    status: Literal["QUEUED", "IN_PROGRESS", "COMPLETE", "FAILED"]
    channel: str
    file_name: str | None
    format: str | None
    dry_run: bool
    force: bool
    total_records: int | None
    processed_records: int
    applied: int
    unchanged: int
    errors: int
    amount_delta: Money
    payout_delta: Money
    currency: str
    failure: str | None
    undo_of: str | None
    undone_by: str | None
    sha256: str | None
    size: int | None
    created_at: Time | None
    started_at: Time | None
    finished_at: Time | None
    actor: str | None


class SubmissionList(Shape):
    items: list[Submission]
    next_cursor: Cursor


class RowError(Shape):
    row: int
    column: str | None
    type: str | None = Field(examples=["VALIDATION", "CONTRACT"])
    code: str | None
    message: str | None
    action_id: int | None


class RowErrorList(Shape):
    items: list[RowError]
    next_cursor: Cursor


class RowResult(Shape):
    row: int
    outcome: str | None = Field(examples=["applied", "unchanged", "error"])
    action_id: int | None
    amount_before: Money | None
    amount_after: Money | None
    payout_before: Money | None
    payout_after: Money | None
    state_after: str | None
    column: str | None
    type: str | None
    code: str | None
    message: str | None


class RowResultList(Shape):
    items: list[RowResult]
    next_cursor: Cursor


# --- the impact.com-compatible API (PascalCase, as impact.com sends it) --------------------------

IdOrEmpty = Annotated[int | str, Field(description="An id, or an empty string when there is none.")]


class CompatPage(Shape):
    """impact.com's paging fields, strings as impact.com sends them."""

    page: str = Field(alias="@page")
    numpages: str = Field(alias="@numpages")
    pagesize: str = Field(alias="@pagesize")
    total: str = Field(alias="@total")
    start: str = Field(alias="@start")
    end: str = Field(alias="@end")
    uri: str = Field(alias="@uri")
    firstpageuri: str = Field(alias="@firstpageuri")
    previouspageuri: str = Field(alias="@previouspageuri")
    nextpageuri: str = Field(alias="@nextpageuri")
    lastpageuri: str = Field(alias="@lastpageuri")


class CompatItem(Shape):
    Sku: str
    ItemName: str
    Category: str
    Quantity: str
    SaleAmount: Money
    SaleAmountCurrency: str
    Payout: Money
    PayoutCurrency: str
    IntendedQuantity: str
    IntendedSaleAmount: Money
    IntendedPayout: Money


# impact.com's amounts of an Action are numbers (tap-impact's schemas/actions.json): a JSON number written
# with the currency's decimals exactly (80.00, -20.00; 1250 for JPY), never rounded through a float
CompatMoney = Annotated[float, Field(description="A JSON number written with the currency's decimals exactly, "
                                                 "like 80.00 (read it as a decimal to keep it exact).",
                                     examples=[80.0])]


class CompatAction(Shape):
    Id: str
    CampaignId: int
    CampaignName: str
    ActionTrackerId: int
    ActionTrackerName: str
    EventTypeId: int
    MediaPartnerId: int
    MediaPartnerName: str
    State: State
    StateDetail: str
    Amount: CompatMoney
    Payout: CompatMoney
    DeltaAmount: CompatMoney
    DeltaPayout: CompatMoney
    IntendedAmount: CompatMoney
    IntendedPayout: CompatMoney
    Currency: str
    EventDate: str
    CreationDate: str
    UpdateDate: str
    LockingDate: str
    LockedDate: str
    Oid: str
    CustomerId: str
    PromoCode: str
    Note: str
    Uri: str


class CompatActionWithItems(CompatAction):
    Items: list[CompatItem]


class CompatActionList(CompatPage):
    Actions: list[CompatAction]


class CompatActionItems(Shape):
    ActionItems: list[CompatItem]


class CompatQueued(Shape):
    """A PUT or DELETE is queued as a one-row API submission; follow ``QueuedUri`` for its outcome."""

    Status: Literal["QUEUED"]
    QueuedUri: str
    BatchId: str


class CompatErrorDetail(Shape):
    Line: int
    Row: int
    Column: str
    Status: str
    Type: str
    Code: str
    Reason: str
    Message: str
    ActionId: str
    CampaignId: int
    ActionTrackerId: IdOrEmpty
    OrderId: str
    MediaPartnerId: IdOrEmpty


class CompatSubmissionCommon(Shape):
    Id: str
    BatchId: str
    AccountId: int
    CampaignId: int
    Status: str = Field(examples=["Queued", "In Progress", "Complete", "Failed"])
    StatusCode: str
    Channel: str
    DryRun: bool
    SubmissionDate: str
    CreatedDate: str
    StartedDate: str
    CompletionDate: str
    TotalRecords: int
    ProcessedRecords: int
    Applied: int
    Unchanged: int
    TotalErrors: int
    ErrorCount: int
    AmountDelta: Money
    PayoutDelta: Money
    Currency: str
    Failure: str
    Uri: str


class CompatAPISubmission(CompatSubmissionCommon):
    Type: str = Field(examples=["Modification", "Reversal", "Undo"])
    ActionId: str
    ActionTrackerId: IdOrEmpty
    OrderId: str
    MediaPartnerId: IdOrEmpty
    Payload: str
    Outcome: str
    ErrorType: str
    ErrorReason: str
    ErrorMessage: str
    Errors: list[CompatErrorDetail]


class CompatFileSubmission(CompatSubmissionCommon):
    FileName: str
    Format: str
    TotalErrors: str = Field(examples=["3"])  # type: ignore[assignment]  # a text here, as impact.com sends it
    Type: str
    ErrorsUri: str


class CompatFileSubmissionList(CompatPage):
    FTPFileSubmissions: list[CompatFileSubmission]


class CompatErrorDetails(CompatPage):
    ErrorDetail: list[CompatErrorDetail]


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema as it is validated (by alias), with nested models under ``$defs``."""
    return model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}", mode="serialization")


# --- the impact.com-compatible reads of api/compat_reads.py (types as the tap-impact client loads them) --

DateTimeOrEmpty = Annotated[str, Field(description='ISO 8601 in UTC, or "" when there is none.',
                                       examples=["2026-01-15T10:00:00Z"])]
ExactNumber = Annotated[float, Field(description="An exact decimal JSON number in the currency (12.50): written "
                                                 "from integer minor units, never rounded through a float.")]


class CompatAddress(Shape):
    AddressLine1: str
    AddressLine2: str
    City: str
    State: str
    PostalCode: str
    Country: str


class CompatContact(Shape):
    Name: str
    Email: str
    WorkPhoneNumber: str
    WorkPhoneNumberCountry: str
    CellPhoneNumber: str
    CellPhoneNumberCountry: str
    UserId: int | None


class CompatIndustry(Shape):
    IndustryId: int | None
    IndustryName: str


class CompatCompanyInformation(Shape):
    """The account: its name, the currency of its first campaign, the address of its alerts."""

    CompanyName: str
    Website: str
    PrimaryPhoneNumber: str
    PrimaryPhoneNumberCountry: str
    SecondaryPhoneNumber: str
    SecondaryPhoneNumberCountry: str
    CorporateAddress: CompatAddress
    BillingAddress: CompatAddress
    Currency: str
    Timezone: str
    OrganizationType: str
    EinSsnForeignTaxId: str
    RegisteredForIndirectTax: bool | None
    IndirectTaxNumber: str
    Industry: CompatIndustry
    MinimumContactRating: int | None
    CommercialContact: CompatContact
    FinancialContact: CompatContact
    TechnicalContact: CompatContact
    Uri: str


class CompatCategories(Shape):
    PrimaryCategory: str
    AdditionalCategory: str


class CompatCampaign(Shape):
    Id: int
    Name: str
    State: str
    Currency: str
    ShortDescription: str
    LongDescription: str
    Rating: int | None
    SiteDefinition: str
    SearchKeywords: str
    ShippingRegions: str
    TrackingDomain: str
    ThirdPartyImpressionPixel: str
    IdentityCollapsing: str
    Categories: CompatCategories
    AdvertiserId: int
    AdvertiserName: str
    AdvertiserUrl: str
    CampaignId: int
    CampaignName: str
    CampaignUrl: str
    CreationDate: Time
    Uri: str


class CompatCampaignList(CompatPage):
    Campaigns: list[CompatCampaign]


class CompatPartnerCampaign(Shape):
    CampaignId: int
    CampaignName: str
    InsertionOrderId: int = Field(description="payoutdesk's newest contract of the partner in the campaign.")
    InsertionOrderName: str
    JoinDate: Time


class CompatMediaPartner(Shape):
    Id: int
    Name: str
    Description: str
    State: str
    RelationshipState: str
    Currency: str
    Website: str
    PartnerType: str
    PrimaryPromotionalMethod: str
    PromotionalMethods: str
    PromotingCountries: str
    Rating: int | None
    Contact: None
    AddressLine1: str
    AddressLine2: str
    City: str
    CountryState: str
    PostalCode: str
    Country: str
    PhoneNumber: str
    Timezone: str
    MpValue1: str
    MpValue2: str
    MpValue3: str
    Campaigns: list[CompatPartnerCampaign]
    Groups: list[dict[str, Any]]
    DateCreated: Time
    Uri: str


class CompatMediaPartnerList(CompatPage):
    MediaPartners: list[CompatMediaPartner]


class CompatActionUpdate(Shape):
    """One entry of an action's history, as impact.com's change log shows it."""

    Id: str
    ActionId: str
    CampaignId: int
    CampaignName: str
    ActionTrackerId: int
    ActionTrackerName: str
    MediaPartnerId: int
    MediaPartnerName: str
    State: State
    StateDetail: str
    StateDetailDescription: str
    Disposition: str
    DeltaAmount: ExactNumber
    DeltaPayout: ExactNumber
    Currency: str
    UpdateDate: Time
    ActionDate: Time
    LockingDate: DateTimeOrEmpty
    ClearingDate: DateTimeOrEmpty
    Oid: str
    CustomerId: str
    CustomerStatus: str
    PromoCode: str
    ActionUri: str
    Uri: str
    Kind: Literal["CREATED", "APPROVED", "REVERSED", "RESTORED", "MODIFIED", "RESET", "LOCKED"]
    Note: str
    Channel: str
    SubmissionId: str


class CompatActionUpdateList(CompatPage):
    ActionUpdates: list[CompatActionUpdate]


class CompatAPISubmissionList(CompatPage):
    APISubmission: list[CompatAPISubmission]
