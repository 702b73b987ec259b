with

source as (

    select * from {{ source('movielens', 'links') }}

),

renamed as (

    select
        cast(movie_id as integer) as movie_id,
        cast(imdb_id as varchar(16)) as imdb_id,
        cast(tmdb_id as integer) as tmdb_id,
        'https://www.imdb.com/title/tt' || imdb_id || '/' as imdb_url

    from source

)

select * from renamed
