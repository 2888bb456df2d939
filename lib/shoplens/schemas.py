"""Column names and table schemas: the one contract every job reads and writes.

Each table's ``StructType`` lives here, and every function that produces a table ends with a
``select`` of exactly these columns (see :func:`shoplens.catalog.TableSpec.conform`).
"""

from __future__ import annotations

from pyspark.sql import types as T

# --- landing contract: fields of one event line (see docs/LANDING.md) ------------------------------
EVENT_ID = "event_id"
EVENT_TIME = "event_time"
EVENT_TYPE = "event_type"
USER_ID = "user_id"
SESSION_KEY = "session_key"
ITEM_ID = "item_id"
CATEGORY_ID = "category_id"
PRICE = "price"
QUANTITY = "quantity"
ORDER_ID = "order_id"
RATING = "rating"
REVIEW_TEXT = "review_text"
SOURCE = "source"

LANDING_EVENT_FIELDS = (
    EVENT_ID,
    EVENT_TIME,
    EVENT_TYPE,
    USER_ID,
    SESSION_KEY,
    ITEM_ID,
    CATEGORY_ID,
    PRICE,
    QUANTITY,
    ORDER_ID,
    RATING,
    REVIEW_TEXT,
    SOURCE,
)
REQUIRED_LANDING_EVENT_FIELDS = (EVENT_ID, EVENT_TIME, EVENT_TYPE)

# --- landing contract: fields of one catalogue line (items/<date>/part-*) ----------------------------
BRAND = "brand"
TITLE = "title"
LISTED_DATE = "listed_date"
LANDING_ITEM_FIELDS = (ITEM_ID, CATEGORY_ID, BRAND, PRICE, TITLE, LISTED_DATE)
UPDATED_ON = "updated_on"

# --- silver ---------------------------------------------------------------------------------------
EVENT_DATE = "event_date"
# Which feed a silver row came from: "landing" for the nightly landing contract, the adapter's
# format name ("taobao", "online_retail", ...) for bulk historical imports. Each owns its rows.
DATASET = "dataset"
DATASET_LANDING = "landing"
SOURCE_EVENT_TYPE = "source_event_type"
IS_BOT = "is_bot"

# --- ingest metadata ---------------------------------------------------------------------------------
RAW_LINE = "raw_line"
SOURCE_FILE = "source_file"
RUN_DATE = "run_date"
STAGE = "stage"
REASON = "reason"

# --- quality results ---------------------------------------------------------------------------------
TABLE_NAME = "table_name"
SUITE = "suite"
EXPECTATION = "expectation"
COLUMN = "column"
SUCCESS = "success"
ELEMENT_COUNT = "element_count"
UNEXPECTED_COUNT = "unexpected_count"
UNEXPECTED_PERCENT = "unexpected_percent"
OBSERVED_VALUE = "observed_value"
IS_GATE = "is_gate"
DETAILS = "details"


def _strings(*names: str) -> list[T.StructField]:
    return [T.StructField(name, T.StringType(), True) for name in names]


# Each landing line parsed leniently: every field as the string it landed as, nothing coerced yet.
LANDING_EVENT_JSON = T.StructType(_strings(*LANDING_EVENT_FIELDS))

BRONZE_EVENTS = T.StructType(
    _strings(*LANDING_EVENT_FIELDS)
    + [
        T.StructField(RAW_LINE, T.StringType(), False),
        T.StructField(SOURCE_FILE, T.StringType(), False),
        T.StructField(RUN_DATE, T.DateType(), False),
    ]
)

QUARANTINE = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(STAGE, T.StringType(), False),
        T.StructField(SOURCE_FILE, T.StringType(), True),
        T.StructField(REASON, T.StringType(), False),
        T.StructField(RAW_LINE, T.StringType(), True),
    ]
)

QUALITY_RESULTS = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(TABLE_NAME, T.StringType(), False),
        T.StructField(SUITE, T.StringType(), False),
        T.StructField(EXPECTATION, T.StringType(), False),
        T.StructField(COLUMN, T.StringType(), True),
        T.StructField(IS_GATE, T.BooleanType(), False),
        T.StructField(SUCCESS, T.BooleanType(), False),
        T.StructField(ELEMENT_COUNT, T.LongType(), True),
        T.StructField(UNEXPECTED_COUNT, T.LongType(), True),
        T.StructField(UNEXPECTED_PERCENT, T.DoubleType(), True),
        T.StructField(OBSERVED_VALUE, T.StringType(), True),
        T.StructField(DETAILS, T.StringType(), True),
    ]
)


SILVER_EVENTS = T.StructType(
    [
        T.StructField(EVENT_ID, T.StringType(), False),
        T.StructField(EVENT_TIME, T.TimestampType(), False),
        T.StructField(EVENT_DATE, T.DateType(), False),
        T.StructField(EVENT_TYPE, T.StringType(), False),
        T.StructField(SOURCE_EVENT_TYPE, T.StringType(), False),
        # HMAC-SHA256 pseudonym of the shop's user id (hex); null for anonymous events.
        T.StructField(USER_ID, T.StringType(), True),
        T.StructField(SESSION_KEY, T.StringType(), True),
        T.StructField(ITEM_ID, T.StringType(), False),
        T.StructField(CATEGORY_ID, T.StringType(), True),
        T.StructField(PRICE, T.DecimalType(18, 2), True),
        T.StructField(QUANTITY, T.IntegerType(), True),
        T.StructField(ORDER_ID, T.StringType(), True),
        T.StructField(RATING, T.IntegerType(), True),
        T.StructField(SOURCE, T.StringType(), True),
        T.StructField(IS_BOT, T.BooleanType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(SOURCE_FILE, T.StringType(), True),
    ]
)

SILVER_REVIEWS = T.StructType(
    [
        T.StructField(EVENT_ID, T.StringType(), False),
        T.StructField(EVENT_TIME, T.TimestampType(), False),
        T.StructField(EVENT_DATE, T.DateType(), False),
        T.StructField(USER_ID, T.StringType(), True),
        T.StructField(ITEM_ID, T.StringType(), False),
        T.StructField(RATING, T.IntegerType(), False),
        T.StructField(REVIEW_TEXT, T.StringType(), True),
        T.StructField(IS_BOT, T.BooleanType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(RUN_DATE, T.DateType(), False),
    ]
)

DUPLICATES = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(EVENT_ID, T.StringType(), False),
        T.StructField(SOURCE_FILE, T.StringType(), True),
        T.StructField(RAW_LINE, T.StringType(), True),
    ]
)


SILVER_ITEMS = T.StructType(
    [
        T.StructField(ITEM_ID, T.StringType(), False),
        T.StructField(CATEGORY_ID, T.StringType(), True),
        T.StructField(BRAND, T.StringType(), True),
        T.StructField(TITLE, T.StringType(), True),
        T.StructField(PRICE, T.DecimalType(18, 2), True),
        T.StructField(LISTED_DATE, T.DateType(), True),
        # The landing date of the catalogue line these attributes come from.
        T.StructField(UPDATED_ON, T.DateType(), False),
        T.StructField(SOURCE_FILE, T.StringType(), True),
    ]
)


# --- gold: sessions (docs/SEQUENCES.md) ------------------------------------------------------------
SESSION_ID = "session_id"
START_TIME = "start_time"
END_TIME = "end_time"
START_DATE = "start_date"
# The first event of the uninterrupted activity (no gap) the session belongs to: the origin of the
# max-length cuts, and the state a later run continues from.
ACTIVITY_START = "activity_start"
DURATION_S = "duration_s"
N_EVENTS = "n_events"
N_DISTINCT_ITEMS = "n_distinct_items"
VIEWS = "views"
CARTS = "carts"
PURCHASES = "purchases"
IS_CONVERTED = "is_converted"
REVENUE = "revenue"
ENTRY_ITEM = "entry_item"
EXIT_ITEM = "exit_item"
CATEGORIES = "categories"
POSITION = "position"

# --- gold: item vocabulary and sequence examples -------------------------------------------------------
ITEM_INDEX = "item_index"
FIRST_RUN_DATE = "first_run_date"
COUNT = "count"
GRAIN = "grain"
GRAIN_USER = "user"
GRAIN_SESSION = "session"
SPLIT = "split"
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SHARD = "shard"
EXAMPLE_ID = "example_id"
TARGET_TIME = "target_time"
INPUT_ITEMS = "input_items"
TARGET_ITEM = "target_item"
NEGATIVES = "negatives"
N_ITEMS = "n_items"
PADDING_INDEX = 0
OOV_INDEX = 1

SESSIONS = T.StructType(
    [
        T.StructField(SESSION_ID, T.StringType(), False),
        T.StructField(DATASET, T.StringType(), False),
        # The actor: the user's pseudonym, else (anonymous) the session key, never both.
        T.StructField(USER_ID, T.StringType(), True),
        T.StructField(SESSION_KEY, T.StringType(), True),
        T.StructField(START_TIME, T.TimestampType(), False),
        T.StructField(END_TIME, T.TimestampType(), False),
        T.StructField(DURATION_S, T.LongType(), False),
        T.StructField(N_EVENTS, T.LongType(), False),
        T.StructField(N_DISTINCT_ITEMS, T.IntegerType(), False),
        T.StructField(VIEWS, T.LongType(), False),
        T.StructField(CARTS, T.LongType(), False),
        T.StructField(PURCHASES, T.LongType(), False),
        T.StructField(IS_CONVERTED, T.BooleanType(), False),
        # Sum of price * quantity (1 when absent) over purchases; null when none of them has a price.
        T.StructField(REVENUE, T.DecimalType(38, 2), True),
        T.StructField(ENTRY_ITEM, T.StringType(), False),
        T.StructField(EXIT_ITEM, T.StringType(), False),
        T.StructField(CATEGORIES, T.ArrayType(T.StringType()), False),
        T.StructField(IS_BOT, T.BooleanType(), False),
        T.StructField(ACTIVITY_START, T.TimestampType(), False),
        T.StructField(START_DATE, T.DateType(), False),
    ]
)

SESSION_EVENTS = T.StructType(
    [
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(EVENT_ID, T.StringType(), False),
        T.StructField(SESSION_ID, T.StringType(), False),
        # 1, 2, ... in (event_time, event_id) order within the session.
        T.StructField(POSITION, T.IntegerType(), False),
        T.StructField(START_DATE, T.DateType(), False),
    ]
)

ITEM_VOCAB = T.StructType(
    [
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(ITEM_ID, T.StringType(), False),
        T.StructField(ITEM_INDEX, T.IntegerType(), False),
        T.StructField(FIRST_RUN_DATE, T.DateType(), False),
        # Non-bot events of sequences.event_types, as of the last run that counted the item.
        T.StructField(COUNT, T.LongType(), False),
    ]
)

SEQUENCE_EXAMPLES = T.StructType(
    [
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(GRAIN, T.StringType(), False),
        T.StructField(SPLIT, T.StringType(), False),
        T.StructField(SHARD, T.IntegerType(), False),
        T.StructField(EXAMPLE_ID, T.StringType(), False),
        T.StructField(USER_ID, T.StringType(), True),
        T.StructField(SESSION_KEY, T.StringType(), True),
        T.StructField(SESSION_ID, T.StringType(), True),
        T.StructField(TARGET_TIME, T.TimestampType(), False),
        T.StructField(INPUT_ITEMS, T.ArrayType(T.IntegerType()), False),
        T.StructField(TARGET_ITEM, T.IntegerType(), False),
        T.StructField(NEGATIVES, T.ArrayType(T.IntegerType()), True),
        T.StructField(N_ITEMS, T.IntegerType(), False),
    ]
)


# --- gold: user activity, profiles and segments (docs/PROFILES.md) -----------------------------------
EVENTS = "events"
FAVS = "favs"
RETURNS = "returns"
REVIEWS = "reviews"
ORDERS = "orders"
UNITS = "units"
SPEND = "spend"
REFUNDS = "refunds"
CATEGORY_SCORES = "category_scores"
PRICED_PURCHASES = "priced_purchases"
PRICE_RATIO_SUM = "price_ratio_sum"
SESSIONS_COUNT = "sessions"
SESSION_SECONDS = "session_seconds"
BOT_EVENTS = "bot_events"
SNAPSHOT_DATE = "snapshot_date"
FIRST_SEEN = "first_seen"
LAST_SEEN = "last_seen"
LAST_PURCHASE = "last_purchase"
TENURE_DAYS = "tenure_days"
ACTIVE_DAYS = "active_days"
RECENCY_DAYS = "recency_days"
FREQUENCY = "frequency"
MONETARY = "monetary"
ORDERS_BY_WINDOW = "orders_by_window"
SPEND_BY_WINDOW = "spend_by_window"
VIEW_TO_CART = "view_to_cart"
CART_TO_PURCHASE = "cart_to_purchase"
AVG_SESSION_S = "avg_session_s"
DISTINCT_CATEGORIES = "distinct_categories"
TOP_CATEGORIES = "top_categories"
AVG_ORDER_VALUE = "avg_order_value"
PRICE_SENSITIVITY = "price_sensitivity"
R_SCORE, F_SCORE, M_SCORE = "r_score", "f_score", "m_score"
RFM_SEGMENT = "rfm_segment"
VALUE_TIER = "value_tier"
CLUSTER = "cluster"
KIND = "kind"
SEGMENT = "segment"
USERS = "users"
USER_SHARE = "user_share"
REVENUE_SHARE = "revenue_share"
AVG_RECENCY_DAYS = "avg_recency_days"
AVG_FREQUENCY = "avg_frequency"
AVG_MONETARY = "avg_monetary"
DESCRIPTION = "description"
FIT_DATE = "fit_date"
K = "k"
SILHOUETTE = "silhouette"
MODEL_PATH = "model_path"

MONEY = T.DecimalType(18, 2)

USER_DAILY_ACTIVITY = T.StructType(
    [
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(USER_ID, T.StringType(), False),
        T.StructField(EVENT_DATE, T.DateType(), False),
        T.StructField(EVENTS, T.LongType(), False),
        T.StructField(VIEWS, T.LongType(), False),
        T.StructField(CARTS, T.LongType(), False),
        T.StructField(FAVS, T.LongType(), False),
        # Purchase events (order lines), and distinct orders (order_id, else one per line).
        T.StructField(PURCHASES, T.LongType(), False),
        T.StructField(ORDERS, T.LongType(), False),
        T.StructField(RETURNS, T.LongType(), False),
        T.StructField(REVIEWS, T.LongType(), False),
        T.StructField(UNITS, T.LongType(), False),
        # Sum of price * quantity (1 when absent) of purchases, and of returns (positive).
        T.StructField(SPEND, MONEY, False),
        T.StructField(REFUNDS, MONEY, False),
        T.StructField(N_DISTINCT_ITEMS, T.IntegerType(), False),
        # Category → events weighted by type (profiles.affinity_weights).
        T.StructField(CATEGORY_SCORES, T.MapType(T.StringType(), T.DoubleType()), False),
        # Purchases with a price, and the sum of price / the day's median price of the category.
        T.StructField(PRICED_PURCHASES, T.LongType(), False),
        # Ratios rounded to 6 decimals and summed as decimals: the same sum in any order.
        T.StructField(PRICE_RATIO_SUM, T.DecimalType(28, 6), False),
        # Sessions started this day (gold.sessions) and their summed duration.
        T.StructField(SESSIONS_COUNT, T.LongType(), False),
        T.StructField(SESSION_SECONDS, T.LongType(), False),
        T.StructField(BOT_EVENTS, T.LongType(), False),
        T.StructField(IS_BOT, T.BooleanType(), False),
    ]
)

USER_PROFILES = T.StructType(
    [
        T.StructField(SNAPSHOT_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(USER_ID, T.StringType(), False),
        T.StructField(FIRST_SEEN, T.DateType(), False),
        T.StructField(LAST_SEEN, T.DateType(), False),
        T.StructField(LAST_PURCHASE, T.DateType(), True),
        T.StructField(TENURE_DAYS, T.IntegerType(), False),
        T.StructField(ACTIVE_DAYS, T.LongType(), False),
        # Days since the last purchase; null for a user who never bought.
        T.StructField(RECENCY_DAYS, T.IntegerType(), True),
        # Orders and net spend (spend - refunds, at least 0) over profiles.rfm_window_days.
        T.StructField(FREQUENCY, T.LongType(), False),
        T.StructField(MONETARY, MONEY, False),
        T.StructField(ORDERS_BY_WINDOW, T.MapType(T.StringType(), T.LongType()), False),
        T.StructField(SPEND_BY_WINDOW, T.MapType(T.StringType(), MONEY), False),
        T.StructField(EVENTS, T.LongType(), False),
        T.StructField(VIEWS, T.LongType(), False),
        T.StructField(CARTS, T.LongType(), False),
        T.StructField(FAVS, T.LongType(), False),
        T.StructField(PURCHASES, T.LongType(), False),
        T.StructField(RETURNS, T.LongType(), False),
        T.StructField(REVIEWS, T.LongType(), False),
        T.StructField(VIEW_TO_CART, T.DoubleType(), True),
        T.StructField(CART_TO_PURCHASE, T.DoubleType(), True),
        T.StructField(SESSIONS_COUNT, T.LongType(), False),
        T.StructField(AVG_SESSION_S, T.DoubleType(), True),
        T.StructField(DISTINCT_CATEGORIES, T.IntegerType(), False),
        T.StructField(TOP_CATEGORIES, T.ArrayType(T.StringType()), False),
        T.StructField(AVG_ORDER_VALUE, MONEY, True),
        T.StructField(PRICE_SENSITIVITY, T.DoubleType(), True),
        T.StructField(IS_BOT, T.BooleanType(), False),
        T.StructField(R_SCORE, T.IntegerType(), True),
        T.StructField(F_SCORE, T.IntegerType(), True),
        T.StructField(M_SCORE, T.IntegerType(), True),
        T.StructField(RFM_SEGMENT, T.StringType(), False),
        T.StructField(VALUE_TIER, T.StringType(), False),
        T.StructField(CLUSTER, T.IntegerType(), True),
    ]
)

SEGMENT_SUMMARY = T.StructType(
    [
        T.StructField(SNAPSHOT_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        # "rfm_segment", "cluster" or "bots".
        T.StructField(KIND, T.StringType(), False),
        T.StructField(SEGMENT, T.StringType(), False),
        T.StructField(USERS, T.LongType(), False),
        T.StructField(USER_SHARE, T.DoubleType(), False),
        T.StructField(REVENUE, MONEY, False),
        T.StructField(REVENUE_SHARE, T.DoubleType(), False),
        T.StructField(AVG_RECENCY_DAYS, T.DoubleType(), True),
        T.StructField(AVG_FREQUENCY, T.DoubleType(), False),
        T.StructField(AVG_MONETARY, T.DoubleType(), False),
        T.StructField(DESCRIPTION, T.StringType(), False),
    ]
)

CLUSTER_MODELS = T.StructType(
    [
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(FIT_DATE, T.DateType(), False),
        T.StructField(K, T.IntegerType(), False),
        T.StructField(SILHOUETTE, T.DoubleType(), False),
        T.StructField(USERS, T.LongType(), False),
        T.StructField(MODEL_PATH, T.StringType(), False),
        T.StructField(DETAILS, T.StringType(), False),
    ]
)

# --- models: shared metrics, churn, lifetime value -------------------------------------------------
JOB = "job"
MODEL = "model"
PROTOCOL = "protocol"
METRIC = "metric"
VALUE = "value"
N_EXAMPLES = "n_examples"
CHURN_PROBABILITY = "churn_probability"
RISK_BAND = "risk_band"
EVALUATION_SNAPSHOT = "evaluation_snapshot"
FEATURE = "feature"
IMPORTANCE = "importance"
RANK = "rank"
LABEL = "label"
HAS_PURCHASED = "has_purchased"
REPEAT_PURCHASES = "repeat_purchases"
RECENCY_WEEKS = "recency_weeks"
AGE_WEEKS = "age_weeks"
AVG_REPEAT_VALUE = "avg_repeat_value"
P_ALIVE = "p_alive"
EXPECTED_PURCHASES = "expected_purchases"
EXPECTED_AVG_VALUE = "expected_avg_value"
EXPECTED_VALUE = "expected_value"
HORIZON_WEEKS = "horizon_weeks"

MODEL_METRICS = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(JOB, T.StringType(), False),
        # The dataset evaluated ("landing", "online_retail", ...): two datasets never share a row.
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(MODEL, T.StringType(), False),
        # "train", "test", ... and how the split was made, e.g. "snapshot_holdout" or
        # "sampled_100_negatives" (a sampled-negative figure is never read as a full-catalogue one).
        T.StructField(SPLIT, T.StringType(), False),
        T.StructField(PROTOCOL, T.StringType(), False),
        T.StructField(METRIC, T.StringType(), False),
        T.StructField(VALUE, T.DoubleType(), True),
        T.StructField(N_EXAMPLES, T.LongType(), True),
    ]
)

CHURN_SCORES = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(USER_ID, T.StringType(), False),
        T.StructField(MODEL, T.StringType(), False),
        # P(no purchase in churn.horizon_days after the run date).
        T.StructField(CHURN_PROBABILITY, T.DoubleType(), False),
        # high (>= churn.threshold), medium (>= churn.medium_threshold), low.
        T.StructField(RISK_BAND, T.StringType(), False),
        T.StructField(RECENCY_DAYS, T.IntegerType(), False),
        # The snapshot the scoring model was evaluated on (its metrics in gold.model_metrics).
        T.StructField(EVALUATION_SNAPSHOT, T.DateType(), False),
    ]
)

CHURN_FEATURE_IMPORTANCE = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(MODEL, T.StringType(), False),
        T.StructField(FEATURE, T.StringType(), False),
        # gbt: Spark's impurity importance (sums to 1); logreg: |coefficient| on standardised features.
        T.StructField(IMPORTANCE, T.DoubleType(), False),
        T.StructField(RANK, T.IntegerType(), False),
    ]
)

TRAINING_SNAPSHOTS = "training_snapshots"
EXAMPLES = "examples"
GBT_PATH = "gbt_path"
LOGREG_PATH = "logreg_path"
SETTINGS = "settings"

CHURN_MODELS = T.StructType(
    [
        T.StructField(DATASET, T.StringType(), False),
        # The run date that fitted the models; later run dates within churn.refit_every_days reuse them.
        T.StructField(FIT_DATE, T.DateType(), False),
        # The snapshot the models were evaluated on (their metrics: gold.model_metrics under fit_date).
        T.StructField(EVALUATION_SNAPSHOT, T.DateType(), False),
        T.StructField(TRAINING_SNAPSHOTS, T.ArrayType(T.DateType(), False), False),
        # Labelled training examples the models were fitted on.
        T.StructField(EXAMPLES, T.LongType(), False),
        T.StructField(GBT_PATH, T.StringType(), False),
        T.StructField(LOGREG_PATH, T.StringType(), False),
        # The churn settings and feature names of the fit (JSON): a run with others refits.
        T.StructField(SETTINGS, T.StringType(), False),
    ]
)

CUSTOMER_VALUE = T.StructType(
    [
        T.StructField(SNAPSHOT_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(USER_ID, T.StringType(), False),
        T.StructField(HAS_PURCHASED, T.BooleanType(), False),
        # BG/NBD statistics (paper conventions): x = distinct purchase days - 1, t_x and T in weeks
        # from the first purchase day; null for a user who never bought.
        T.StructField(REPEAT_PURCHASES, T.IntegerType(), True),
        T.StructField(RECENCY_WEEKS, T.DoubleType(), True),
        T.StructField(AGE_WEEKS, T.DoubleType(), True),
        # Mean net spend of the repeat purchase days (floored at 0); null when x = 0.
        T.StructField(AVG_REPEAT_VALUE, MONEY, True),
        T.StructField(P_ALIVE, T.DoubleType(), True),
        T.StructField(EXPECTED_PURCHASES, T.DoubleType(), True),
        T.StructField(EXPECTED_AVG_VALUE, T.DoubleType(), True),
        T.StructField(EXPECTED_VALUE, T.DoubleType(), True),
        T.StructField(HORIZON_WEEKS, T.DoubleType(), False),
    ]
)


# --- gold: ALS recommendations (docs/ALS.md) ---------------------------------------------------------
USER_INDEX = "user_index"
SCORE = "score"
SIMILAR_ITEM_ID = "similar_item_id"
TRIAL = "trial"
ALS_RANK = "als_rank"
REG_PARAM = "reg_param"
ALPHA = "alpha"
IS_BEST = "is_best"
CONFIDENCE = "confidence"
# gold.recommendations.source: which recommender produced the row.
SOURCE_ALS = "als"
SOURCE_SEGMENT = "segment_popularity"
SOURCE_CATEGORY = "category_popularity"
SOURCE_GLOBAL = "global_trend"

USER_INDEX_TABLE = T.StructType(
    [
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(USER_ID, T.StringType(), False),
        # ALS's integer id: 0, 1, ... per dataset in order of first appearance; never reassigned.
        T.StructField(USER_INDEX, T.IntegerType(), False),
        T.StructField(FIRST_RUN_DATE, T.DateType(), False),
    ]
)

ITEM_INDEX_TABLE = T.StructType(
    [
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(ITEM_ID, T.StringType(), False),
        T.StructField(ITEM_INDEX, T.IntegerType(), False),
        T.StructField(FIRST_RUN_DATE, T.DateType(), False),
    ]
)

RECOMMENDATIONS = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(USER_ID, T.StringType(), False),
        # 1 = best.
        T.StructField(RANK, T.IntegerType(), False),
        T.StructField(ITEM_ID, T.StringType(), False),
        # als: the factors' dot product; popularity sources: the item's share of the decayed confidence.
        T.StructField(SCORE, T.DoubleType(), False),
        T.StructField(SOURCE, T.StringType(), False),
    ]
)

SIMILAR_ITEMS = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(ITEM_ID, T.StringType(), False),
        T.StructField(RANK, T.IntegerType(), False),
        T.StructField(SIMILAR_ITEM_ID, T.StringType(), False),
        # Cosine similarity of the two items' ALS factors.
        T.StructField(SCORE, T.DoubleType(), False),
    ]
)

ALS_TRIALS = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(TRIAL, T.IntegerType(), False),
        T.StructField(ALS_RANK, T.IntegerType(), False),
        T.StructField(REG_PARAM, T.DoubleType(), False),
        T.StructField(ALPHA, T.DoubleType(), False),
        # Scored on the validation rows of gold.sequence_examples (grain user).
        T.StructField(METRIC, T.StringType(), False),
        T.StructField(VALUE, T.DoubleType(), False),
        T.StructField(N_EXAMPLES, T.LongType(), False),
        T.StructField(IS_BEST, T.BooleanType(), False),
    ]
)


# --- gold: next-item model predictions (docs/SEQREC.md, "Batch scoring") -----------------------------
# The run date of the model version that scored (its folder run_date=... under models/next_item/).
MODEL_VERSION = "model_version"

NEXT_ITEM_PREDICTIONS = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(DATASET, T.StringType(), False),
        T.StructField(USER_ID, T.StringType(), False),
        # 1 = best.
        T.StructField(RANK, T.IntegerType(), False),
        T.StructField(ITEM_ID, T.StringType(), False),
        # The model's raw score (logit) for the item as the user's next one: compare it within one user's rows only.
        T.StructField(SCORE, T.DoubleType(), False),
        # meta.json's model ("gru4rec", "sasrec", ...).
        T.StructField(MODEL, T.StringType(), False),
        T.StructField(MODEL_VERSION, T.DateType(), False),
    ]
)


# --- gold: pipeline runs (docs/RUNS.md) ----------------------------------------------------------------
ATTEMPT = "attempt"
STATUS = "status"
STARTED_AT = "started_at"
ENDED_AT = "ended_at"
ERROR = "error"
APP_ID = "app_id"
DRIVER = "driver"
ARGUMENTS = "arguments"
INPUT_ROWS = "input_rows"
OUTPUT_ROWS = "output_rows"
ROWS_WRITTEN = "rows_written"
TABLE_VERSIONS = "table_versions"
QUALITY_CHECKS = "quality_checks"
QUALITY_FAILED = "quality_failed"
QUALITY_FAILED_GATES = "quality_failed_gates"
METRICS = "metrics"

STATUS_RUNNING = "running"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"
# An earlier attempt still "running" when a later one of the same (job, run date) takes the run lock:
# it died without recording its end (killed, timed out, driver lost).
STATUS_ABANDONED = "abandoned"
# A succeeded run whose tables a backfill rewound to before its run date (shoplens.backfill); the
# backfill's own run of the date follows as a later attempt.
STATUS_REWOUND = "rewound"

PIPELINE_RUNS = T.StructType(
    [
        T.StructField(JOB, T.StringType(), False),
        T.StructField(RUN_DATE, T.DateType(), False),
        # 1, 2, ...: Airflow's try number when the DAG passes --attempt, else one more than recorded.
        T.StructField(ATTEMPT, T.IntegerType(), False),
        # The job's dataset argument(s), comma-separated; null for jobs over every dataset.
        T.StructField(DATASET, T.StringType(), True),
        # running / succeeded / failed / abandoned (died without recording its end; set by the next attempt).
        T.StructField(STATUS, T.StringType(), False),
        T.StructField(STARTED_AT, T.TimestampType(), False),
        T.StructField(ENDED_AT, T.TimestampType(), True),
        # "ExceptionClass: message", cut to 2000 characters.
        T.StructField(ERROR, T.StringType(), True),
        # Spark's application id, and host:pid of the driver.
        T.StructField(APP_ID, T.StringType(), True),
        T.StructField(DRIVER, T.StringType(), True),
        # The job's command-line arguments, to re-run it by hand.
        T.StructField(ARGUMENTS, T.StringType(), True),
        # Rows the job read, where the job knows it cheaply (landing lines, bronze rows); else null.
        T.StructField(INPUT_ROWS, T.LongType(), True),
        # Sum of rows_written.
        T.StructField(OUTPUT_ROWS, T.LongType(), True),
        # Per table: rows its commits wrote, from Delta's operation metrics (WRITE: numOutputRows;
        # MERGE: rows inserted + updated), summed over the run's commits to the table.
        T.StructField(ROWS_WRITTEN, T.MapType(T.StringType(), T.LongType()), True),
        # Per table: the Delta version of the run's last commit to it.
        T.StructField(TABLE_VERSIONS, T.MapType(T.StringType(), T.LongType()), True),
        # From the ops.quality_results rows the run wrote: expectations checked, failed (gates and
        # warnings), and one line per failed gate. Null when the job ran no quality suite.
        T.StructField(QUALITY_CHECKS, T.LongType(), True),
        T.StructField(QUALITY_FAILED, T.LongType(), True),
        T.StructField(QUALITY_FAILED_GATES, T.ArrayType(T.StringType()), True),
        # Key figures the job chose to record (e.g. lines_quarantined).
        T.StructField(METRICS, T.MapType(T.StringType(), T.DoubleType()), True),
    ]
)


# --- gold: published runs (docs/RUNS.md, "Publishing a night") ---------------------------------------------
PUBLISHED_AT = "published_at"
RUN_DATE_ROWS = "run_date_rows"
JOB_ATTEMPTS = "job_attempts"

PUBLISHED_RUNS = T.StructType(
    [
        T.StructField(RUN_DATE, T.DateType(), False),
        T.StructField(PUBLISHED_AT, T.TimestampType(), False),
        # Every table's Delta version when the night was published: read a consistent night with
        # VERSION AS OF table_versions['gold.recommendations'].
        T.StructField(TABLE_VERSIONS, T.MapType(T.StringType(), T.LongType()), False),
        # Rows for the run date at those versions, for the tables with a date partition column.
        T.StructField(RUN_DATE_ROWS, T.MapType(T.StringType(), T.LongType()), False),
        # The succeeded attempt of each job recorded for the run date in gold.pipeline_runs.
        T.StructField(JOB_ATTEMPTS, T.MapType(T.StringType(), T.IntegerType()), False),
    ]
)
