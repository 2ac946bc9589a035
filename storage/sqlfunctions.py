"""The functions `spyglass query sql` may call: a fixed allowlist, never a deny-list.

ClickHouse has about 1,900 functions and adds more every release; some read files
(`file`), the server's settings and state (`getSetting`, `hostName`, `version`),
dictionaries (`dictGet`), other tables (`joinGet`, `hasColumnInTable`) or call out
(`url`, the AI functions). A deny-list falls behind the next release; an allowlist
only ever refuses a new function until someone adds it here on purpose.

Every name here is a pure computation over its arguments: arithmetic, comparison,
logic, strings, arrays, maps, tuples, JSON text, dates, IP addresses, hashes and
aggregates. Names are as ClickHouse's parser prints them (`a = b` is `equals`,
`CASE x WHEN` is `caseWithExpression`, `INTERVAL 1 HOUR` is `toIntervalHour`).
They are compared case-insensitively, which is safe because no two ClickHouse
functions differ only in case, and the test suite checks that against the
server's own `system.functions`.
"""

from __future__ import annotations

#: Operators and syntax that the parser turns into function calls. `lambda`, `exists`,
#: `grouping`, `untuple` and `countDistinct` (from `count(DISTINCT x)`) are the parser's
#: own names, absent from `system.functions`.
_SYNTAX = """
    and or not xor equals notEquals less greater lessOrEquals greaterOrEquals
    isNotDistinctFrom isDistinctFrom like notLike ilike notILike match notMatch
    in notIn globalIn globalNotIn nullIn notNullIn globalNullIn globalNotNullIn exists
    plus minus multiply divide intDiv intDivOrZero modulo moduloOrZero negate
    positiveModulo tuple tupleElement array arrayElement arrayElementOrNull lambda
    if multiIf caseWithExpression CAST accurateCast accurateCastOrNull accurateCastOrDefault
    isNull isNotNull isZeroOrNull coalesce ifNull nullIf assumeNotNull toNullable
    grouping concat untuple
"""

_MATH = """
    abs sign sqrt cbrt exp exp2 exp10 log ln log2 log10 log1p pow power sqr
    sin cos tan asin acos atan atan2 sinh cosh tanh asinh acosh atanh hypot pi e
    degrees radians sigmoid erf erfc lgamma tgamma factorial widthBucket width_bucket
    round roundBankers roundDown roundToExp2 floor ceil ceiling trunc truncate
    greatest least clamp gcd lcm max2 min2 midpoint isFinite isInfinite isNaN ifNotFinite
    divideOrNull intDivOrNull moduloOrNull mod
    bitAnd bitOr bitXor bitNot bitShiftLeft bitShiftRight bitRotateLeft bitRotateRight
    bitTest bitTestAll bitTestAny bitCount bitHammingDistance
    rand rand32 rand64 randCanonical randUniform randNormal generateUUIDv4 generateUUIDv7
"""

_CONVERSION = """
    toString toFixedString toBool toLowCardinality toTypeName reinterpretAsString
    toInt8 toInt16 toInt32 toInt64 toInt128 toInt256
    toUInt8 toUInt16 toUInt32 toUInt64 toUInt128 toUInt256 toFloat32 toFloat64
    toInt8OrNull toInt16OrNull toInt32OrNull toInt64OrNull toUInt8OrNull toUInt16OrNull
    toUInt32OrNull toUInt64OrNull toFloat32OrNull toFloat64OrNull
    toInt8OrZero toInt16OrZero toInt32OrZero toInt64OrZero toUInt8OrZero toUInt16OrZero
    toUInt32OrZero toUInt64OrZero toFloat32OrZero toFloat64OrZero
    toDecimal32 toDecimal64 toDecimal128 toDecimalString
    toDate toDate32 toDateTime toDateTime32 toDateTime64 toDateOrNull toDateTimeOrNull
    toDateTime64OrNull toDateOrZero toDateTimeOrZero toDateTime64OrZero
    parseDateTime parseDateTimeOrNull parseDateTimeBestEffort parseDateTimeBestEffortOrNull
    parseDateTime64BestEffort parseDateTime64BestEffortOrNull
    toUUID toUUIDOrNull toUUIDOrZero toIPv4 toIPv4OrNull toIPv6 toIPv6OrNull
    toUnixTimestamp toUnixTimestamp64Second toUnixTimestamp64Milli toUnixTimestamp64Micro
    toUnixTimestamp64Nano fromUnixTimestamp fromUnixTimestamp64Milli fromUnixTimestamp64Micro
    fromUnixTimestamp64Nano FROM_UNIXTIME
    toIntervalNanosecond toIntervalMicrosecond toIntervalMillisecond toIntervalSecond
    toIntervalMinute toIntervalHour toIntervalDay toIntervalWeek toIntervalMonth
    toIntervalQuarter toIntervalYear
    hex unhex bin unbin base64Encode base64Decode tryBase64Decode
"""

_DATES = """
    now now64 today yesterday toTimeZone toTimezone timeZoneOf timezoneOf
    toYear toQuarter toMonth toDayOfYear toDayOfMonth toDayOfWeek toHour toMinute
    toSecond toMillisecond toMicrosecond toNanosecond toISOWeek toISOYear toWeek
    toYearWeek toYYYYMM toYYYYMMDD toYYYYMMDDhhmmss toMonday
    toStartOfYear toStartOfQuarter toStartOfMonth toStartOfWeek toStartOfDay
    toStartOfHour toStartOfMinute toStartOfSecond toStartOfMillisecond
    toStartOfMicrosecond toStartOfNanosecond toStartOfFiveMinutes toStartOfFiveMinute
    toStartOfTenMinutes toStartOfFifteenMinutes toStartOfInterval toLastDayOfMonth
    toRelativeYearNum toRelativeMonthNum toRelativeWeekNum toRelativeDayNum
    toRelativeHourNum toRelativeMinuteNum toRelativeSecondNum
    dateDiff date_diff DATE_DIFF timestampDiff timestamp_diff age dateTrunc date_trunc
    DATE_TRUNC dateName monthName formatDateTime DATE_FORMAT formatDateTimeInJodaSyntax
    addNanoseconds addMicroseconds addMilliseconds addSeconds addMinutes addHours addDays
    addWeeks addMonths addQuarters addYears subtractNanoseconds subtractMicroseconds
    subtractMilliseconds subtractSeconds subtractMinutes subtractHours subtractDays
    subtractWeeks subtractMonths subtractQuarters subtractYears
    addDate subDate timeSlot timeSlots makeDate makeDateTime makeDateTime64
    time_bucket date_bin
"""

_STRINGS = """
    length lengthUTF8 char_length character_length octet_length empty notEmpty
    lower upper lowerUTF8 upperUTF8 lcase ucase initcap initcapUTF8 reverse reverseUTF8
    concatWithSeparator concat_ws substring substr mid substringUTF8 substringIndex
    left right leftUTF8 rightUTF8 leftPad rightPad lpad rpad repeat space
    trim trimBoth trimLeft trimRight ltrim rtrim
    startsWith endsWith startsWithCaseInsensitive endsWithCaseInsensitive
    position positionCaseInsensitive positionUTF8 locate instr
    replace replaceAll replaceOne replaceRegexpAll replaceRegexpOne regexpQuoteMeta
    REGEXP_REPLACE translate translateUTF8
    splitByChar splitByString splitByRegexp splitByWhitespace splitByNonAlpha
    arrayStringConcat alphaTokens ngrams tokens
    extract extractAll extractGroups extractAllGroups extractAllGroupsHorizontal
    extractAllGroupsVertical regexpExtract REGEXP_EXTRACT
    matchCaseInsensitive multiMatchAny multiMatchAnyIndex multiSearchAny
    multiSearchFirstIndex multiSearchFirstPosition countMatches countSubstrings
    hasToken hasTokenCaseInsensitive hasSubsequence
    leftPadUTF8 rightPadUTF8 toValidUTF8 isValidUTF8 firstLine
    editDistance levenshteinDistance damerauLevenshteinDistance jaroSimilarity
    ngramDistance ngramSearch
    formatReadableSize formatReadableQuantity formatReadableTimeDelta
    formatReadableDecimalSize encodeURLComponent decodeURLComponent
    domain domainWithoutWWW topLevelDomain protocol path pathFull queryString fragment
    netloc cutWWW cutQueryString cutFragment extractURLParameter extractURLParameters
"""

_COLLECTIONS = """
    has hasAll hasAny hasSubstr indexOf countEqual range arrayConcat arraySlice
    arrayPushBack arrayPushFront arrayPopBack arrayPopFront arrayResize arrayReverse
    arraySort arrayReverseSort arrayPartialSort arrayDistinct arrayUniq arrayEnumerate
    arrayEnumerateUniq arrayEnumerateDense arrayCompact arrayFlatten flatten arrayZip
    arrayIntersect arrayUnion arrayExcept arraySymmetricDifference
    arrayMap arrayFilter arrayExists arrayAll arrayCount arraySum arrayAvg arrayMin
    arrayMax arrayProduct arrayFirst arrayFirstIndex arrayFirstOrNull arrayLast
    arrayLastIndex arrayLastOrNull arrayCumSum arrayCumSumNonNegative arrayDifference
    arraySplit arrayReverseSplit arrayFill arrayReverseFill arrayFold arrayReduce
    arrayJoin arrayStringConcat arrayWithConstant arrayShiftLeft arrayShiftRight
    arrayRotateLeft arrayRotateRight arrayTopK arrayBottomK arrayRemove emptyArrayString
    emptyArrayUInt8 emptyArrayUInt16 emptyArrayUInt32 emptyArrayUInt64 emptyArrayInt32
    emptyArrayInt64 emptyArrayFloat64 notHas cardinality
    map mapKeys mapValues mapContains mapContainsKey mapFromArrays mapApply mapFilter
    mapExists mapAll mapSort mapAdd mapSubtract mapUpdate mapConcat
    tupleNames tupleConcat tuplePlus tupleMinus tupleMultiply tupleDivide
    tupleNegate tupleToNameValuePairs flattenTuple
    JSONHas JSONLength JSONType JSONKey JSONExtract JSONExtractString JSONExtractInt
    JSONExtractUInt JSONExtractFloat JSONExtractBool JSONExtractRaw JSONExtractArrayRaw
    JSONExtractKeys JSONExtractKeysAndValues JSONArrayLength isValidJSON toJSONString
    JSON_VALUE JSON_QUERY JSON_EXISTS simpleJSONHas simpleJSONExtractString
    simpleJSONExtractInt simpleJSONExtractUInt simpleJSONExtractFloat simpleJSONExtractBool
    simpleJSONExtractRaw visitParamHas visitParamExtractString visitParamExtractInt
    visitParamExtractUInt visitParamExtractFloat visitParamExtractBool visitParamExtractRaw
"""

_NETWORK_AND_HASH = """
    IPv4NumToString IPv4StringToNum IPv4StringToNumOrNull IPv4NumToStringClassC
    IPv6NumToString IPv6StringToNum IPv6StringToNumOrNull IPv4ToIPv6 IPv4CIDRToRange
    IPv6CIDRToRange cutIPv6 isIPv4String isIPv6String isIPAddressInRange
    INET_ATON INET_NTOA INET6_ATON INET6_NTOA MACNumToString MACStringToNum
    cityHash64 sipHash64 sipHash128 xxHash32 xxHash64 xxh3 murmurHash3_32 murmurHash3_64
    farmHash64 intHash32 intHash64 halfMD5 MD5 SHA1 SHA224 SHA256 SHA512 CRC32 CRC64
    jumpConsistentHash UUIDNumToString UUIDStringToNum
    runningDifference runningDifferenceStartingWithFirstValue neighbor transform bar
    identity ignore
"""

#: Aggregate functions; combinators (below) may follow them: sumIf, uniqExactArray…
AGGREGATES = frozenset("""
    count sum avg min max any anyLast any_value first_value last_value anyHeavy
    argMin argMax min_by max_by argAndMin argAndMax avgWeighted sumWithOverflow sumKahan
    uniq uniqExact uniqCombined uniqCombined64 uniqHLL12 uniqUpTo countDistinct
    groupArray groupUniqArray groupArraySorted groupArrayLast groupArraySample
    groupArrayInsertAt groupArrayIntersect groupArrayMovingSum groupArrayMovingAvg
    groupConcat group_concat array_agg string_agg groupBitAnd groupBitOr groupBitXor
    groupBitmap sumMappedArrays
    quantile quantiles quantileExact quantilesExact quantileExactLow quantileExactHigh
    quantileExactWeighted quantilesExactWeighted quantileTDigest quantilesTDigest
    quantileTDigestWeighted quantileTiming quantilesTiming quantileDeterministic
    quantileBFloat16 quantileDD quantilesDD quantileGK quantilesGK
    quantileInterpolatedWeighted median medianExact medianTDigest medianTiming
    stddevPop stddevSamp stddev std varPop varSamp covarPop covarSamp corr
    skewPop skewSamp kurtPop kurtSamp entropy simpleLinearRegression
    topK topKWeighted approx_top_k approx_top_count approx_top_sum histogram
    deltaSum deltaSumTimestamp nonNegativeDerivative exponentialMovingAverage
    intervalLengthSum maxIntersections maxIntersectionsPosition
    retention windowFunnel sequenceMatch sequenceCount boundingRatio sparkbar sumCount
    singleValueOrNull
""".split())

#: Window-only functions (aggregates also work over windows).
WINDOW_FUNCTIONS = frozenset("""
    row_number rank dense_rank denseRank percent_rank percentRank cume_dist ntile
    lag lead lagInFrame leadInFrame nth_value
""".split())

#: Aggregate combinators, in ClickHouse's spelling; several may be chained.
COMBINATORS = ("If", "Array", "Distinct", "OrNull", "OrDefault", "Merge", "State",
               "SimpleState", "ForEach", "Resample", "ArgMin", "ArgMax", "Map", "Tuple",
               "Null")

_COMBINATORS_LONGEST_FIRST = sorted(COMBINATORS, key=len, reverse=True)
SCALARS = frozenset(" ".join((_SYNTAX, _MATH, _CONVERSION, _DATES, _STRINGS, _COLLECTIONS,
                              _NETWORK_AND_HASH)).split())
ALLOWED = SCALARS | AGGREGATES | WINDOW_FUNCTIONS
_LOWER = frozenset(n.lower() for n in ALLOWED)
_LOWER_AGGREGATES = frozenset(n.lower() for n in AGGREGATES)


def function_allowed(name: str) -> bool:
    """Whether `name` (as the parser printed it) is on the allowlist.

    An aggregate may carry combinators: `countIf`, `sumArrayIf`, `uniqExactOrNull`.
    They are peeled off the end, in ClickHouse's spelling, until an aggregate on the
    list remains; nothing else is ever accepted that way.
    """
    if name.lower() in _LOWER:
        return True
    base = name
    while True:
        for suffix in _COMBINATORS_LONGEST_FIRST:
            if base.endswith(suffix) and len(base) > len(suffix):
                base = base[: -len(suffix)]
                break
        else:
            return False
        if base.lower() in _LOWER_AGGREGATES:
            return True
