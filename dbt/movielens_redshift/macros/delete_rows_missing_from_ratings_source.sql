{#
    Post-hook of the incremental int_ratings: after an incremental run,
    delete the keys that are no longer in stg_ratings (the source was
    truncated and reloaded without them). Renders nothing on a full refresh.
    The target is referenced by its bare name: Redshift's DELETE takes no
    table alias.
#}
{% macro delete_rows_missing_from_ratings_source() -%}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where not exists (
            select 1
            from {{ ref('stg_ratings') }} as source_ratings
            where
                source_ratings.user_id = {{ this.identifier }}.user_id
                and source_ratings.movie_id = {{ this.identifier }}.movie_id
        )
    {%- endif -%}
{%- endmacro %}
