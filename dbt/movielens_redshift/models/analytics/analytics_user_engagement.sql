{{
    config(
        dist=('user_id' if target.type == 'redshift' else none),
        sort=(['user_id'] if target.type == 'redshift' else none),
    )
}}

{#
    One row per user. engagement_segment by number of ratings:
    power >= 500, heavy >= 150, regular >= 50, light below
    (ml-latest-small: min 20, median 70, p90 400 ratings per user).
#}
with

user_profiles as (

    select * from {{ ref('int_user_profiles') }}

),

activity as (

    select
        *,
        case
            when first_rated_at is null then first_tagged_at
            when first_tagged_at is null then first_rated_at
            when first_tagged_at < first_rated_at then first_tagged_at
            else first_rated_at
        end as first_activity_at,
        case
            when last_rated_at is null then last_tagged_at
            when last_tagged_at is null then last_rated_at
            when last_tagged_at > last_rated_at then last_tagged_at
            else last_rated_at
        end as last_activity_at

    from user_profiles

),

user_engagement as (

    select
        user_id,
        rating_count,
        distinct_movie_count,
        avg_rating,
        tag_count,
        tagged_movie_count,
        first_rated_at,
        last_rated_at,
        first_activity_at,
        last_activity_at,
        {{ dbt.datediff('first_activity_at', 'last_activity_at', 'day') }} + 1 as active_span_days,
        tag_count > 0 as is_tagger,
        case
            when rating_count >= 500 then 'power'
            when rating_count >= 150 then 'heavy'
            when rating_count >= 50 then 'regular'
            else 'light'
        end as engagement_segment

    from activity

)

select * from user_engagement
