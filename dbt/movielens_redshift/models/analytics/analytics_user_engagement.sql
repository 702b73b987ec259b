{#
    One row per user. engagement_segment by number of ratings:
    power >= 500, heavy >= 150, regular >= 50, light below
    (ml-latest-small: min 20, median 70, p90 400 ratings per user).
    Favourite genre: genre_rank 1 of int_user_genres (null when the user
    rated no movie with a listed genre).
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

user_genres as (

    select * from {{ ref('int_user_genres') }}

),

genre_preferences as (

    select
        user_id,
        count(*) as rated_genre_count,
        max(case when genre_rank = 1 then genre end) as favourite_genre,
        max(case when genre_rank = 1 then rating_count end) as favourite_genre_rating_count,
        cast(max(case when genre_rank = 1 then avg_rating end) as decimal(18, 6)) as favourite_genre_avg_rating

    from user_genres
    group by user_id

),

user_engagement as (

    select
        activity.user_id,
        activity.rating_count,
        activity.distinct_movie_count,
        activity.avg_rating,
        activity.tag_count,
        activity.tagged_movie_count,
        activity.first_rated_at,
        activity.last_rated_at,
        activity.first_activity_at,
        activity.last_activity_at,
        {{ dbt.datediff('activity.first_activity_at', 'activity.last_activity_at', 'day') }} + 1 as active_span_days,
        {{ dbt.datediff('activity.first_rated_at', 'activity.last_rated_at', 'day') }} + 1 as rating_span_days,
        activity.tag_count > 0 as is_tagger,
        case
            when activity.rating_count >= 500 then 'power'
            when activity.rating_count >= 150 then 'heavy'
            when activity.rating_count >= 50 then 'regular'
            else 'light'
        end as engagement_segment,
        coalesce(genre_preferences.rated_genre_count, 0) as rated_genre_count,
        genre_preferences.favourite_genre,
        coalesce(genre_preferences.favourite_genre_rating_count, 0) as favourite_genre_rating_count,
        genre_preferences.favourite_genre_avg_rating,
        {{ share('coalesce(genre_preferences.favourite_genre_rating_count, 0)', 'activity.rating_count') }}
            as favourite_genre_share

    from activity
    left join genre_preferences
        on activity.user_id = genre_preferences.user_id

)

select * from user_engagement
