using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace Metering.Storage.Postgres.Migrations
{
    /// <inheritdoc />
    public partial class AddRecordedBy : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<string>(
                name: "recorded_by",
                table: "usage_events",
                type: "character varying(64)",
                maxLength: 64,
                nullable: true);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropColumn(
                name: "recorded_by",
                table: "usage_events");
        }
    }
}
