{#
    One row per movie and genre, exploded from the pipe-separated list with
    the numbers table and split_part (portable: no unnest, no
    regexp_split_to_table, no generate_series). A movie with
    `(no genres listed)` keeps one row with that value and is_listed_genre
    false, so that no movie (or its ratings) drops out of genre totals.
#}
with

movies as (

    select * from {{ ref('stg_movies') }}

),

numbers as (

    select * from {{ ref('int_numbers') }}

),

exploded as (

    select
        movies.movie_id,
        numbers.n as genre_position,
        case
            when movies.genre_count = 0 then movies.genres
            else split_part(movies.genres, '|', numbers.n)
        end as genre,
        movies.genre_count > 0 as is_listed_genre

    from movies
    inner join numbers
        on numbers.n <= case when movies.genre_count = 0 then 1 else movies.genre_count end

)

select * from exploded
