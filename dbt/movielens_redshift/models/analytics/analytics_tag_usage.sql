{#
    One row per tag (trimmed, case-insensitive): how often and by how many
    users it was applied, to how many movies, when, the mean rating of the
    tagged movies, and the mean rating the taggers themselves gave the movies
    they tagged (null when none of them rated it).
#}
with

tags as (

    select * from {{ ref('stg_tags') }}

),

ratings as (

    select * from {{ ref('int_ratings') }}

),

movie_ratings as (

    select * from {{ ref('int_movie_ratings') }}

),

tag_usage as (

    select
        tags.tag_normalized,
        count(*) as application_count,
        count(distinct tags.movie_id) as tagged_movie_count,
        count(distinct tags.user_id) as tagger_count,
        min(tags.tagged_at) as first_tagged_at,
        max(tags.tagged_at) as last_tagged_at,
        cast(avg(cast(ratings.rating as decimal(18, 6))) as decimal(18, 6)) as tagger_avg_rating

    from tags
    left join ratings
        on
            tags.user_id = ratings.user_id
            and tags.movie_id = ratings.movie_id
    group by tags.tag_normalized

),

tagged_movies as (

    select distinct
        tag_normalized,
        movie_id

    from tags

),

tagged_movie_ratings as (

    select
        tagged_movies.tag_normalized,
        cast(avg(movie_ratings.avg_rating) as decimal(18, 6)) as tagged_movie_avg_rating

    from tagged_movies
    inner join movie_ratings
        on tagged_movies.movie_id = movie_ratings.movie_id
    group by tagged_movies.tag_normalized

),

final as (

    select
        tag_usage.tag_normalized,
        tag_usage.application_count,
        tag_usage.tagged_movie_count,
        tag_usage.tagger_count,
        tag_usage.first_tagged_at,
        tag_usage.last_tagged_at,
        tagged_movie_ratings.tagged_movie_avg_rating,
        tag_usage.tagger_avg_rating

    from tag_usage
    left join tagged_movie_ratings
        on tag_usage.tag_normalized = tagged_movie_ratings.tag_normalized

)

select * from final
