{#
    The ratings fact: one row per user and movie, incremental by key.

    A run selects only the source rows that are new or changed: a key not in
    the table yet (whatever its timestamp, so late-arriving rows are never
    missed behind a high-water mark), or a key whose rating or time differs.
    delete+insert (dbt-postgres and dbt-redshift both support it) replaces
    those keys; a post-hook then deletes keys that left the source, so a
    TRUNCATE + reload of the source converges without a full refresh and
    only the changed rows are written. `dbt build --full-refresh` rebuilds.
#}
with

ratings as (

    select * from {{ ref('stg_ratings') }}

),

changed as (

    select ratings.*
    from ratings
    {% if is_incremental() %}
        where not exists (
            select 1
            from {{ this }} as loaded
            where
                loaded.user_id = ratings.user_id
                and loaded.movie_id = ratings.movie_id
                and loaded.rating = ratings.rating
                and loaded.rated_at_epoch = ratings.rated_at_epoch
        )
    {% endif %}

),

facts as (

    select
        user_id,
        movie_id,
        rating,
        rated_at_epoch,
        rated_at,
        cast(extract(year from rated_at) as integer) as rated_year,
        cast(extract(quarter from rated_at) as integer) as rated_quarter,
        cast({{ dbt.date_trunc('quarter', 'rated_at') }} as date) as rated_quarter_start,
        {{ dbt.current_timestamp() }} as loaded_at

    from changed

)

select * from facts
