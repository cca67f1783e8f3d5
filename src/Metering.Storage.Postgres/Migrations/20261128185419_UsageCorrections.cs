using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace Metering.Storage.Postgres.Migrations
{
    /// <inheritdoc />
    public partial class UsageCorrections : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<string>(
                name: "kind",
                table: "usage_events",
                type: "character varying(16)",
                maxLength: 16,
                nullable: false,
                defaultValue: "usage");

            migrationBuilder.AddColumn<string>(
                name: "reason",
                table: "usage_events",
                type: "character varying(512)",
                maxLength: 512,
                nullable: true);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropColumn(
                name: "kind",
                table: "usage_events");

            migrationBuilder.DropColumn(
                name: "reason",
                table: "usage_events");
        }
    }
}
