{#
    Unix epoch seconds -> timestamp without time zone (UTC).
    `timestamp + bigint * interval '1 second'` is valid on PostgreSQL and is
    the documented Redshift idiom; unlike dateadd() it takes a bigint, so it
    has no 2038 limit.
#}
{% macro epoch_to_timestamp(epoch_seconds) -%}
    (cast('1970-01-01 00:00:00' as timestamp) + cast({{ epoch_seconds }} as bigint) * interval '1 second')
{%- endmacro %}
