{#
    One row per user who rated or tagged at least one movie. In MovieLens
    every tagger also rated, but a tag-only user keeps a row (rating_count 0).
#}
with

ratings as (

    select * from {{ ref('int_ratings') }}

),

tags as (

    select * from {{ ref('stg_tags') }}

),

user_ratings as (

    select
        user_id,
        count(*) as rating_count,
        count(distinct movie_id) as distinct_movie_count,
        cast(avg(cast(rating as decimal(18, 6))) as decimal(18, 6)) as avg_rating,
        min(rated_at) as first_rated_at,
        max(rated_at) as last_rated_at

    from ratings
    group by user_id

),

user_tags as (

    select
        user_id,
        count(*) as tag_count,
        count(distinct movie_id) as tagged_movie_count,
        min(tagged_at) as first_tagged_at,
        max(tagged_at) as last_tagged_at

    from tags
    group by user_id

),

users as (

    select user_id from user_ratings
    union
    select user_id from user_tags

),

user_profiles as (

    select
        users.user_id,
        coalesce(user_ratings.rating_count, 0) as rating_count,
        coalesce(user_ratings.distinct_movie_count, 0) as distinct_movie_count,
        user_ratings.avg_rating,
        user_ratings.first_rated_at,
        user_ratings.last_rated_at,
        coalesce(user_tags.tag_count, 0) as tag_count,
        coalesce(user_tags.tagged_movie_count, 0) as tagged_movie_count,
        user_tags.first_tagged_at,
        user_tags.last_tagged_at

    from users
    left join user_ratings
        on users.user_id = user_ratings.user_id
    left join user_tags
        on users.user_id = user_tags.user_id

)

select * from user_profiles
